from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sd_optim.hosts import diffusers_keymap as km
from sd_optim.hosts.base import GenerationJob
from sd_optim.hosts.diffusers_host import DiffusersHost, make_scheduler
from sd_optim.tiny_models import TINY_SIZE


def _job(**kw) -> GenerationJob:
    base = {"prompt": "a cat", "negative_prompt": "blurry", "seed": 1, "steps": 2, "cfg_scale": 7.0,
            "sampler": "Euler a", "scheduler": "Automatic", "width": TINY_SIZE, "height": TINY_SIZE}
    base.update(kw)
    return GenerationJob(**base)


def _render(host, **kw) -> np.ndarray:
    return np.asarray(next(iter(host.generate(_job(**kw)))).image).astype(np.int16)


@pytest.fixture(scope="module")
def sd1_file(tiny_sd1_paths):
    return load_file(tiny_sd1_paths[0])


@pytest.fixture(scope="module")
def sdxl_file(tiny_sdxl_paths):
    return load_file(tiny_sdxl_paths[0])


def test_identity(sd1_host, tiny_sd1_paths, sdxl_host):
    assert sd1_host.model_config() == "sd1-ldm"
    assert sdxl_host.model_config() == "sdxl-sgm"
    assert sd1_host.device == torch.device("cpu")
    (ref,) = sd1_host.checkpoints()
    digest = hashlib.sha256(tiny_sd1_paths[0].read_bytes()).hexdigest()
    assert ref.short_hash == digest[:10]
    assert ref.path == str(tiny_sd1_paths[0])
    assert ref.title == f"{tiny_sd1_paths[0].name} [{digest[:10]}]"


def test_refuses_other_model_configs(tmp_path, tiny_sd1_config_dir):
    from sd_mecha.extensions import model_configs

    kohya = tmp_path / "kohya_style.safetensors"
    kohya_keys = model_configs.resolve("sd1-kohya").keys()
    save_file({k: torch.zeros(1) for k in kohya_keys}, kohya)
    with pytest.raises(ValueError, match="kohya_style.safetensors.*sd1-kohya"):
        DiffusersHost(kohya, config_dir=tiny_sd1_config_dir)
    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(1)}, junk)
    with pytest.raises(ValueError, match="junk.safetensors"):
        DiffusersHost(junk, config_dir=tiny_sd1_config_dir)


def _perturbed(v: torch.Tensor) -> torch.Tensor:
    if not v.is_floating_point():  # e.g. position_ids, a live int64 buffer in transformers 4.30
        return v * -2 + 1
    return v * -1.5 + 0.25


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_every_key_round_trips_through_the_slot(arch, request):
    host = request.getfixturevalue(f"{arch}_host")
    file = request.getfixturevalue(f"{arch}_file")
    with host.open_slot() as slot:
        # transformers 4.30 also keeps position_ids as a live buffer (the file leaves it out)
        assert {k for k in slot if not k.endswith("position_ids")} == set(file)
        for k, v in file.items():
            assert torch.equal(slot[k], v), k
        for k, v in file.items():
            new = _perturbed(v)
            slot[k] = new
            assert torch.equal(slot[k], new), k
            if k in host._live:  # the live diffusers tensors hold the new value, in their layout
                rule = host._rules[k]
                live = host._live[k]
                for dst, want in zip(live, km.split(rule, new, [t.shape for t in live])):
                    assert torch.equal(dst.detach(), want), (k, rule)
        slot.restore()
        for k, v in file.items():
            assert torch.equal(slot[k], v), k
            assert slot[k].dtype == v.dtype
    for k, v in file.items():  # and again after the context
        assert torch.equal(host._read(k), v), k


def test_slot_errors(sd1_host, sd1_file):
    with sd1_host.open_slot() as slot:
        with pytest.raises(KeyError, match="not.a.key"):
            slot["not.a.key"]
        with pytest.raises(KeyError, match="not.a.key"):
            slot["not.a.key"] = torch.zeros(1)
        k = "model.diffusion_model.out.2.weight"
        with pytest.raises(ValueError, match=r"out\.2\.weight.*\(4, 8, 3\).*\(4, 8, 3, 3\)"):
            slot[k] = torch.zeros(4, 8, 3)
        with pytest.raises(TypeError):
            del slot[k]
        with pytest.raises(RuntimeError), sd1_host.open_slot():
            pass
    assert torch.equal(sd1_host._read(k), sd1_file[k])


def test_side_keys_and_aliases(sd1_host, sdxl_host, sdxl_file):
    pos = "alphas_cumprod"  # an sd1-ldm key: not in the file, no live tensor in diffusers
    with sd1_host.open_slot() as slot:
        n = len(slot)  # 1130, or 1131 where transformers keeps position_ids as a live buffer (4.30)
        assert pos not in slot
        slot[pos] = torch.linspace(1, 0, 1000)
        assert pos in slot and len(slot) == n + 1
        assert torch.equal(slot[pos], torch.linspace(1, 0, 1000))
        alias = "cond_stage_model.transformer.embeddings.position_embedding.weight"
        canonical = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
        assert torch.equal(slot[alias], slot[canonical])
    with sd1_host.open_slot() as slot:
        assert pos not in slot and len(slot) == n
    scale = "conditioner.embedders.1.model.logit_scale"
    with sdxl_host.open_slot() as slot:
        slot[scale] = torch.tensor(1.0, dtype=torch.float16)
        assert slot[scale].dtype == torch.float32  # the file's dtype
        assert float(slot[scale]) == 1.0
    with sdxl_host.open_slot() as slot:
        assert torch.equal(slot[scale], sdxl_file[scale])


def test_generation_is_deterministic(sd1_host):
    a = _render(sd1_host)
    b = _render(sd1_host)
    assert np.array_equal(a, b)
    assert a.shape == (TINY_SIZE, TINY_SIZE, 3) and a.std() > 5
    assert not np.array_equal(a, _render(sd1_host, seed=2))


@pytest.mark.parametrize("key", [
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight",
    "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    "first_stage_model.decoder.conv_in.weight",
])
def test_writing_a_key_changes_the_image_and_restore_brings_it_back(sd1_host, sd1_file, key):
    before = _render(sd1_host)
    with sd1_host.open_slot() as slot:
        slot[key] = _perturbed(sd1_file[key])
        during = _render(sd1_host)
    after = _render(sd1_host)
    assert np.abs(during - before).mean() > 1.0
    assert np.array_equal(after, before)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_restore_on_exception(sd1_host, sd1_file, exc):
    key = "model.diffusion_model.input_blocks.0.0.weight"
    with pytest.raises(exc), sd1_host.open_slot() as slot:
        slot[key] = torch.zeros_like(sd1_file[key])
        assert not slot[key].any()
        raise exc("boom")
    with sd1_host.open_slot() as slot:
        assert torch.equal(slot[key], sd1_file[key])


def test_images_seeds_infotext_and_stop(sd1_host, tiny_sd1_paths):
    images = list(sd1_host.generate(_job(n_images=2, seed=5, cfg_scale=7.0)))
    assert [im.seed for im in images] == [5, 6]
    assert images[0].image.size == (TINY_SIZE, TINY_SIZE)
    assert not np.array_equal(np.asarray(images[0].image), np.asarray(images[1].image))
    assert images[0].infotext == (
        "a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, "
        f"CFG scale: 7, Seed: 5, Size: {TINY_SIZE}x{TINY_SIZE}, Model: {tiny_sd1_paths[0].stem}")
    one = _render(sd1_host, seed=6)
    assert np.array_equal(one, np.asarray(images[1].image))  # image i uses seed + i
    calls = []
    stopped = list(sd1_host.generate(_job(n_images=3), should_stop=lambda: bool(calls.append(1))
                                     or len(calls) > 1))
    assert len(stopped) == 1


def test_sampler_and_scheduler_mapping(sd1_host):
    base = sd1_host._base_scheduler_config
    cases = {
        ("Euler", "Automatic"): ("EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
        ("Euler a", "SGM Uniform"): ("EulerAncestralDiscreteScheduler",
                                     {"timestep_spacing": "trailing"}),
        ("DPM++ 2M", "Automatic"): ("DPMSolverMultistepScheduler",
                                    {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M", "Uniform"): ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
        ("DPM++ 2M SDE", "Automatic"): ("DPMSolverMultistepScheduler",
                                        {"use_karras_sigmas": True,
                                         "algorithm_type": "sde-dpmsolver++"}),
        ("DPM2 a", "Karras"): ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        ("LMS", "Exponential"): ("LMSDiscreteScheduler", {"use_exponential_sigmas": True}),
        ("Heun", "Karras"): ("HeunDiscreteScheduler", {"use_karras_sigmas": True}),
        ("DDIM", "Automatic"): ("DDIMScheduler", {"timestep_spacing": base["timestep_spacing"]}),
        ("PLMS", "Automatic"): ("PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", "Karras"): ("UniPCMultistepScheduler", {"use_karras_sigmas": True}),
    }
    for (sampler, schedule), (cls_name, want) in cases.items():
        sched = make_scheduler(sampler, schedule, base)
        assert type(sched).__name__ == cls_name, (sampler, schedule)
        for k, v in want.items():
            assert sched.config[k] == v, (sampler, schedule, k)
        assert sched.config["beta_schedule"] == base["beta_schedule"]
    for name in ("Euler", "Euler a", "Heun", "DPM++ 2M", "DPM++ 2M SDE", "DPM2", "DPM2 a", "LMS",
                 "DDIM", "PLMS", "UniPC", "DPM++ 2S a"):
        assert name in sd1_host.samplers()
    for name in ("Automatic", "Karras", "Exponential", "Uniform", "SGM Uniform"):
        assert name in sd1_host.schedulers()
    with pytest.raises(ValueError, match="unknown sampler 'Foo'.*Euler a.*DPM\\+\\+ 2M"):
        list(sd1_host.generate(_job(sampler="Foo")))
    with pytest.raises(ValueError, match="'Bar'.*Automatic.*Karras"):
        list(sd1_host.generate(_job(sampler="Euler", scheduler="Bar")))
    with pytest.raises(ValueError, match="Euler a.*valid: Automatic, Uniform, SGM Uniform$"):
        make_scheduler("Euler a", "Karras", base)


def test_every_sampler_and_schedule_renders(sd1_host):
    from sd_optim.hosts.diffusers_host import _schedules_for

    for sampler in sd1_host.samplers():
        for schedule in _schedules_for(sampler):
            img = _render(sd1_host, sampler=sampler, scheduler=schedule, steps=3)
            assert img.shape == (TINY_SIZE, TINY_SIZE, 3), (sampler, schedule)
            assert img.std() > 1, (sampler, schedule)  # NaN latents decode to flat black


def test_sdxl_generation_and_fused_keys(sdxl_host, sdxl_file):
    before = _render(sdxl_host, sampler="DPM++ 2M")
    assert before.shape == (TINY_SIZE, TINY_SIZE, 3) and before.std() > 5
    assert np.array_equal(before, _render(sdxl_host, sampler="DPM++ 2M"))
    for key in ("conditioner.embedders.1.model.transformer.resblocks.30.attn.in_proj_weight",
                "conditioner.embedders.1.model.text_projection"):
        with sdxl_host.open_slot() as slot:
            slot[key] = _perturbed(sdxl_file[key])
            during = _render(sdxl_host, sampler="DPM++ 2M")
        assert np.abs(during - before).mean() > 0.5, key
        assert np.array_equal(_render(sdxl_host, sampler="DPM++ 2M"), before)


def test_sd_mecha_merges_straight_into_the_slot(sd1_host, tiny_sd1_paths, sd1_file):
    import sd_mecha

    a, b = (load_file(p) for p in tiny_sd1_paths[1:3])
    recipe = sd_mecha.weighted_sum(sd_mecha.model(tiny_sd1_paths[1]), sd_mecha.model(tiny_sd1_paths[2]),
                                   alpha=0.3)
    with sd1_host.open_slot() as slot:
        sd_mecha.merge(recipe, output=slot, output_dtype=torch.float32, threads=1)
        assert "mecha_recipe" in slot.metadata
        for k in ("model.diffusion_model.out.2.weight", "first_stage_model.decoder.mid.attn_1.q.weight",
                  "cond_stage_model.transformer.text_model.final_layer_norm.bias"):
            assert torch.allclose(slot[k], torch.lerp(a[k], b[k], 0.3), atol=1e-6), k
    for k, v in sd1_file.items():
        assert torch.equal(sd1_host._read(k), v), k


def test_threads_are_picked_by_model_size_in_one_place(tiny_sd1_paths, tiny_sd1_config_dir):
    """make_host (run, demo, app) sets torch's threads: one for tiny models, torch's default for
    real ones."""
    import torch

    from sd_optim.config import config_from_dict
    from sd_optim.hosts import standalone

    assert standalone.cpu_threads_for(10 * 2**20) == 1
    assert standalone.cpu_threads_for(2 * 2**30) == standalone._DEFAULT_THREADS
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        config = config_from_dict({"models": [str(p) for p in tiny_sd1_paths[:2]], "payloads": [{"prompt": "x"}],
                                   "scorers": ["image_stats"], "diffusers_config": str(tiny_sd1_config_dir),
                                   "device": "cpu"})
        standalone.make_host(config)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
