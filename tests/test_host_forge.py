"""The Forge2 host against the faithful fake Forge (tests/fakes/forge): real merges into Forge's
own layout (HF CLIP, CLIP-G q/k/v split and transposed projection), real pictures rendered from
its live weights, a real runner."""

from pathlib import Path

import numpy as np
import optuna
import pytest
import safetensors.torch
import torch
from fakes.forge import installed
from test_runner import make_config

from sd_optim.hosts.base import KeptMerge
from sd_optim.hosts.forge import ForgeHost, HostStateError, forge_targets
from sd_optim.merging import MergeEngine
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner
from sd_optim.search.planning import make_planner

optuna.logging.set_verbosity(optuna.logging.WARNING)

P1 = {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1}
P2 = {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9}


@pytest.fixture
def fake(tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir) as f:
        yield f


@pytest.fixture
def cfg(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    def make(**overrides):
        return make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs",
                           **{"optimizer": {"trials": 2}, **overrides})

    return make


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def expected_live(path, storage=None) -> dict[str, torch.Tensor]:
    """What Forge's loader puts in each parameter for ``path``, by the fake's own loader-side
    conversion (huggingface_guess), keyed like ``FakeForge.parameters()``."""
    from backend.loader import split_state_dict

    parts, _ = split_state_dict(safetensors.torch.load_file(str(path)))
    want = {"unet." + k: v.to(storage) if storage else v for k, v in parts.pop("unet").items()}
    want.update({"vae." + k: v for k, v in parts.pop("vae").items()})
    for component, name in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
        if component in parts:
            want.update({f"clip.{name}.{k}": v for k, v in parts[component].items()})
    return want


def assert_original(fake, path, storage=None):
    """Every live parameter (text encoders included) equals the file, bit-exact."""
    live = fake.parameters()
    want = expected_live(path, storage)
    assert live.pop("clip.clip_l.logit_scale").item() == pytest.approx(4.6055)  # not in checkpoints
    assert set(live) == set(want)
    for name, value in live.items():
        assert value.dtype == want[name].dtype and torch.equal(value, want[name]), name


def out_weight(fake) -> torch.nn.Parameter:
    return fake.model.forge_objects.unet.model.diffusion_model.get_parameter("out.2.weight")


def render(host, config, params):
    planner = make_planner(config, host.model_config())
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(params), slot, planner.model_config)
        return [pixels(g.image) for g in host.generate(job)]


def test_lazy_load_lists_and_refusals(tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, load=False) as fake:
        assert not hasattr(fake.model, "forge_objects")  # FakeInitialModel until a generation
        host = ForgeHost()
        assert host.model_config() == "sd1-ldm"
        assert hasattr(fake.model, "forge_objects") and fake.call_queue.queue_lock.acquire(blocking=False)
        fake.call_queue.queue_lock.release()
        assert host.samplers()[:2] == ["DPM++ 2M", "DPM++ SDE"] and "DDPM" in host.samplers()
        assert "Turbo" in host.schedulers() and "Align Your Steps 32" in host.schedulers()
        assert sorted(c.path for c in host.checkpoints()) == sorted(str(p) for p in tiny_sd1_paths)
        fake.model.is_sd1 = False  # no flag at all: the engine's class is named
        with pytest.raises(HostStateError, match="the loaded model is StableDiffusion:"):
            host.model_config()
        fake.model.is_sd1 = True
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, load=False) as fake:
        fake.sd_models.model_data.forge_loading_parameters = {"checkpoint_info": None}
        with pytest.raises(HostStateError, match="no checkpoint is selected"):
            ForgeHost().model_config()


def test_merges_write_forges_inference_tensors(fake, cfg, tiny_sd1_paths):
    host, config = ForgeHost(), cfg()
    assert all(p.is_inference() for p in fake.model.forge_objects.unet.model.diffusion_model.parameters())
    with pytest.raises(RuntimeError, match="[Ii]nference"):  # why the host writes under inference_mode
        out_weight(fake).copy_(out_weight(fake).detach().clone())
    assert np.abs(render(host, config, P1)[0] - render(host, config, P2)[0]).mean() > 1.0
    assert_original(fake, tiny_sd1_paths[0])


def test_text_encoder_writes_reset_the_cond_caches(fake, cfg, tiny_sd1_paths):
    host, config = ForgeHost(), cfg()
    job = Runner(config, host)._jobs()[0][1]
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    fake.txt2img()  # the first generation after a model selection clears (and skips) the cache
    before = pixels(fake.txt2img().images[0])
    assert fake.processing.StableDiffusionProcessing.cached_c[0] is not None
    with host.open_slot() as slot:
        for key, value in other.items():
            if key.startswith("cond_stage_model."):
                slot[key] = value
        stale = pixels(next(host.generate(job)).image)
        assert np.array_equal(stale, before)  # the fake really serves the cached conds
        slot.commit()
        assert fake.processing.StableDiffusionProcessing.cached_c == [None, None, None]
        fresh = pixels(next(host.generate(job)).image)
        assert np.abs(fresh - before).mean() > 1.0
    assert np.array_equal(pixels(fake.txt2img().images[0]), before)
    assert_original(fake, tiny_sd1_paths[0])


def test_checkpoint_switch_mid_run_stops_without_reloading_over_the_merge(fake, cfg, tiny_sd1_paths):
    host = ForgeHost()
    model = fake.model
    changed = []
    events = []
    for event in Runner(cfg(optimizer={"trials": 3, "seed": 0, "study": "s"}), host).events():
        events.append(event)
        if isinstance(event, ev.TrialFinished) and event.number == 0:
            fake.select(tiny_sd1_paths[1])  # the checkpoint dropdown: parameters change at once
            changed.append(host.model_changed())
    failed = [e for e in events if isinstance(e, ev.TrialFinished) and e.state == "FAIL"]
    assert failed and "model selected in Forge changed to tiny-sd1" in failed[0].reason
    assert "model selected in Forge changed" in events[-1].reason  # the run says why
    assert "model selected in Forge changed" in changed[0]
    assert fake.model is model  # Forge never rebuilt the model during the run
    assert_original(fake, tiny_sd1_paths[0])  # and the merge was undone in place
    fake.txt2img()  # the user's next generation loads the new selection
    assert fake.model is not model
    assert_original(fake, tiny_sd1_paths[1])


def test_quantized_storage_is_refused(tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, storage="bnb-nf4"):
        host = ForgeHost()
        with pytest.raises(HostStateError, match="quantized model: the UNet is stored as 'nf4'"):
            host.model_config()
        with pytest.raises(HostStateError, match="nf4"), host.open_slot():
            pass
    with installed(tiny_sd1_paths, tiny_sd1_config_dir) as fake:
        fake.model.forge_objects.clip.cond_stage_model.clip_l.transformer.text_model.final_layer_norm.weight \
            .gguf_cls = object()
        with pytest.raises(HostStateError, match=r"clip parameter 'clip_l\.transformer.*' is quantized \(gguf_cls\)"):
            ForgeHost().model_config()


def test_fp8_storage_casts_and_restores_bit_exact(tiny_sd1_paths, tiny_sd1_config_dir, cfg):
    fp8 = torch.float8_e4m3fn
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, storage="float8-e4m3fn") as fake:
        host = ForgeHost()
        live = out_weight(fake)
        assert live.dtype == fp8
        key = "model.diffusion_model.out.2.weight"
        value = safetensors.torch.load_file(str(tiny_sd1_paths[1]))[key]
        with host.open_slot() as slot:
            slot[key] = value
            assert torch.equal(out_weight(fake),
                               value.to(fp8))
        a = render(host, cfg(), P1)
        assert np.abs(a[0] - render(host, cfg(), P2)[0]).mean() > 1.0
        assert_original(fake, tiny_sd1_paths[0], storage=fp8)


def test_parameters_replaced_mid_run_are_written_by_name(fake, cfg, tiny_sd1_paths):
    """A low-VRAM "CPU swap" load re-wraps every weight in a new Parameter (here forced by a
    global unload, as a memory setting change causes): writes and the restore must follow."""
    host, config = ForgeHost(), cfg()
    want1, want2 = render(host, config, P1)[0], render(host, config, P2)[0]
    fake.memory_management.cpu_swap = True
    planner = make_planner(config, "sd1-ldm")
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(P1), slot, "sd1-ldm")
        weight = out_weight(fake)
        fake.processing.need_global_unload = True
        assert np.array_equal(pixels(next(host.generate(job)).image), want1)
        assert out_weight(fake) is not weight
        MergeEngine().apply(planner.recipe(P2), slot, "sd1-ldm")
        assert np.array_equal(pixels(next(host.generate(job)).image), want2)
    assert_original(fake, tiny_sd1_paths[0])


def test_external_vae_is_never_written(fake, tiny_sd1_paths, tmp_path):
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    vae_file = tmp_path / "external.vae.safetensors"
    safetensors.torch.save_file({k[len("first_stage_model."):]: v for k, v in other.items()
                                 if k.startswith("first_stage_model.")}, str(vae_file))
    fake.select(additional_modules=[str(vae_file)])
    key = "first_stage_model.decoder.conv_out.weight"
    with ForgeHost().open_slot() as slot:
        live = fake.model.forge_objects.vae.first_stage_model.decoder.conv_out.weight
        assert torch.equal(live, other[key])  # the external VAE is loaded
        slot[key] = torch.zeros_like(live)
        assert torch.equal(live, other[key]) and not slot[key].any()
    assert torch.equal(fake.model.forge_objects.vae.first_stage_model.decoder.conv_out.weight, other[key])


def test_keep_leaves_the_merge_until_forge_reloads(fake, cfg, tiny_sd1_paths):
    host, config = ForgeHost(), cfg()
    planner = make_planner(config, "sd1-ldm")
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(P2), slot, "sd1-ldm")
        merged = pixels(next(host.generate(job)).image)
        kept = fake.parameters()
        slot.keep()
        host.mark_kept(KeptMerge("s", 1, 0.5, "recipe"))
    assert host.kept_merge() is not None
    live = fake.parameters()
    assert all(torch.equal(live[k], kept[k]) for k in kept)  # nothing restored
    assert np.array_equal(pixels(fake.txt2img().images[0]), merged)  # merged encoders' conds
    fake.select(tiny_sd1_paths[1])
    fake.txt2img()
    assert host.kept_merge() is None


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_slot_keys_round_trip_the_checkpoint_layout(arch, request):
    paths = request.getfixturevalue(f"tiny_{arch}_paths")
    config_dir = request.getfixturevalue(f"tiny_{arch}_config_dir")
    config_id = {"sd1": "sd1-ldm", "sdxl": "sdxl-sgm"}[arch]
    original = safetensors.torch.load_file(str(paths[0]))
    other = safetensors.torch.load_file(str(paths[1]))
    with installed(paths, config_dir, arch=config_id) as fake:
        host = ForgeHost()
        assert host.model_config() == config_id
        with host.open_slot() as slot:
            assert set(original) <= set(slot)
            for key, value in original.items():
                assert torch.equal(slot[key], value), key  # q/k/v re-joined, projection transposed back
            for key, value in other.items():
                slot[key] = value.clone()
            # what Forge's own loader would have made of the other file, parameter by parameter
            want = expected_live(paths[1])
            live = fake.parameters()
            for name, value in want.items():
                assert torch.equal(live[name], value), name
            assert all(torch.equal(slot[k], v) for k, v in other.items())
        assert_original(fake, paths[0])
    if arch == "sdxl":
        g = "conditioner.embedders.1.model."
        assert [t.name.rsplit(".", 2)[-2] for t in forge_targets(g + "transformer.resblocks.3.attn.in_proj_weight")] \
            == ["q_proj", "k_proj", "v_proj"]
        (proj,) = forge_targets(g + "text_projection")
        assert proj.transposed and proj.name == "clip_g.transformer.text_projection.weight"


def test_refresh_checkpoints_runs_forges_own_refresh(fake):
    """Forge's checkpoint ↻ (and every page load) runs ``main_entry.refresh_models``, which also
    re-lists the VAE / text-encoder files of the module dropdown; the host's refresh does the same."""
    vae = Path(fake.main_entry.models_path) / "VAE" / "new.vae.safetensors"
    vae.parent.mkdir()
    vae.write_bytes(b"")
    assert vae.name not in fake.main_entry.module_list
    ForgeHost().refresh_checkpoints()
    assert fake.main_entry.module_list[vae.name] == str(vae)
