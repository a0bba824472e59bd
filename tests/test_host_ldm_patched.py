"""The ldm_patched-family host (reForge, Forge Classic, Forge ``previous``) against the faithful fake
(tests/fakes/ldm_patched) in both profiles: real merges into the ComfyUI-style live modules, real
pictures rendered from their live weights, a real runner."""

import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import safetensors.torch
import torch
from fakes.ldm_patched import installed
from test_host_contract import assert_same, pixels
from test_runner import make_config

from sd_optim.errors import ConfigError
from sd_optim.hosts.a1111 import HostStateError
from sd_optim.hosts.ldm_patched import LdmPatchedHost, live_location
from sd_optim.merging import MergeEngine
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, run_to_end
from sd_optim.search.planning import make_planner

optuna.logging.set_verbosity(optuna.logging.WARNING)

P1 = {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1}
P2 = {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9}
PROFILES = ["reforge", "classic"]


@pytest.fixture(params=PROFILES)
def fake(request, tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, profile=request.param) as f:
        yield f


@pytest.fixture
def reforge(tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, profile="reforge") as f:
        yield f


@pytest.fixture
def cfg(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    def make(**overrides):
        return make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs",
                           **{"optimizer": {"trials": 2}, **overrides})

    return make


def render(host, config, params):
    planner = make_planner(config, host.model_config())
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(params), slot, planner.model_config)
        return [pixels(g.image) for g in host.generate(job)]


def test_model_config_lists_and_refusals(fake, tiny_sd1_paths):
    host = LdmPatchedHost()
    assert host.model_config() == "sd1-ldm"
    assert sorted(c.path for c in host.checkpoints()) == sorted(str(p) for p in tiny_sd1_paths)
    assert host.checkpoint_dir() == Path(fake.sd_models.model_path)
    if fake.profile == "reforge":
        assert host.samplers()[:2] == ["DPM++ 2M", "DPM++ SDE"] and "Euler CFG++" in host.samplers()
        assert "Karras" in host.schedulers() and "Karras Dynamic" in host.schedulers()
    else:
        assert "DPM++ 2M Karras" in host.samplers() and host.schedulers() == []
    second = LdmPatchedHost().open_slot()
    with host.open_slot(), pytest.raises(RuntimeError, match="already live"):  # at once, no wait
        second.__enter__()


@pytest.mark.parametrize("kind", ["gguf", "nf4", "scaled_fp8"])
def test_quantized_unet_is_refused(tiny_sd1_paths, tiny_sd1_config_dir, kind):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, profile="reforge", quantized=kind) as f:
        before = f.parameters()
        with pytest.raises(HostStateError, match="cannot merge into packed or scaled weights"), \
                LdmPatchedHost().open_slot():
            pass
        assert f.state.job == "" and f.call_queue.queue_lock.acquire(blocking=False)
        f.call_queue.queue_lock.release()
        assert_same(f.parameters(), before)


def test_sampler_and_scheduler_names_follow_the_profile(fake, cfg):
    host = LdmPatchedHost()
    config = cfg(payloads=[{"name": "p", "prompt": "x", "sampler": "Euler b"}])
    with pytest.raises(ConfigError, match=r"got 'Euler b' \(valid: DPM\+\+ "):
        run_to_end(Runner(config, host))
    if fake.profile == "reforge":
        assert host.sampler_name("DPM++ 2M", "Karras") == ("DPM++ 2M", "Karras")
        config = cfg(payloads=[{"name": "p", "prompt": "x", "sampler": "Euler", "scheduler": "Bogus"}])
        with pytest.raises(ConfigError, match=r"scheduler.*got 'Bogus' \(valid: Automatic, Karras"):
            run_to_end(Runner(config, host))
        return
    # Classic/previous: the schedule type is folded into the WebUI's sampler name
    assert host.sampler_name("DPM++ 2M", "Karras") == ("DPM++ 2M Karras", None)
    assert host.sampler_name("Euler", "Automatic") == ("Euler", None)
    assert host.sampler_name("Euler", "SGM Uniform") == ("Euler SGMUniform", None)
    assert host.sampler_name("DPM++ 2M Karras", "Karras") == ("DPM++ 2M Karras", None)
    with pytest.raises(ValueError, match=r"no sampler 'Euler Karras'.*valid samplers: DPM\+\+ 2M Karras"):
        host.sampler_name("Euler", "Karras")
    # refused before the run starts, not trial after trial
    config = cfg(payloads=[{"name": "p", "prompt": "x", "sampler": "Euler", "scheduler": "Karras"}])
    with pytest.raises(ConfigError, match=r"payloads\[0\]\.sampler: .*schedule type 'Karras'.*got 'Euler'"):
        run_to_end(Runner(config, host))
    final = run_to_end(Runner(cfg(payloads=[{"name": "p", "prompt": "x", "seed": 3, "steps": 2, "width": 64,
                                             "height": 64, "sampler": "DPM++ 2M", "scheduler": "Karras"}],
                                  optimizer={"trials": 1, "seed": 0, "study": "k"}), host))
    assert final.reason == "completed"


def test_slot_has_exactly_the_checkpoint_keys(fake, tiny_sd1_paths):
    want = safetensors.torch.load_file(str(tiny_sd1_paths[0]))
    with LdmPatchedHost().open_slot() as slot:
        assert set(slot) == set(want)  # their values: tests/test_host_contract.py
    # the token embedding lives behind A1111's EmbeddingsWithFixes wrapper
    assert "clip.clip_l.transformer.text_model.embeddings.token_embedding.wrapped.weight" in fake.parameters()


def test_text_encoder_writes_reset_the_cond_caches(fake, cfg, tiny_sd1_paths):
    host = LdmPatchedHost()
    job = Runner(cfg(), host)._jobs()[0][1]
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    before_image = pixels(fake.txt2img().images[0])
    before = fake.parameters()
    empty_before = fake.model.cond_stage_model_empty_prompt
    base = fake.processing.StableDiffusionProcessing
    with host.open_slot() as slot:
        assert np.array_equal(pixels(next(host.generate(job)).image), before_image)
        for key, value in other.items():
            if key.startswith("cond_stage_model."):
                slot[key] = value
        assert np.array_equal(pixels(next(host.generate(job)).image), before_image)  # cached conds
        slot.commit()
        assert len(base.cached_c) == (3 if fake.profile == "reforge" else 2)
        assert base.cached_c[0] is None and base.cached_uc[0] is None
        assert np.abs(pixels(next(host.generate(job)).image) - before_image).mean() > 1.0
        empty = fake.model.cond_stage_model_empty_prompt
        assert torch.equal(empty, fake.model.get_learned_conditioning([""]))
        assert not torch.equal(empty, empty_before)
    assert fake.model.cond_stage_model_empty_prompt is empty_before
    assert np.array_equal(pixels(fake.txt2img().images[0]), before_image)
    assert_same(fake.parameters(), before)


@pytest.mark.parametrize("profile, te_elsewhere", [("reforge", False), ("classic", True)])
def test_baked_lora_neither_leaks_into_trials_nor_is_lost(tiny_sd1_paths, tiny_sd1_config_dir, cfg, profile,
                                                          te_elsewhere):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, profile=profile, te_elsewhere=te_elsewhere) as fake:
        check_lora_round_trip(fake, cfg)


def check_lora_round_trip(fake, cfg):
    host, config = LdmPatchedHost(), cfg()
    clean_params = fake.parameters()
    clean = render(host, config, P1)
    with_lora = pixels(fake.txt2img("<lora:detail> a red fox").images[0])  # the user's last generation
    baked = fake.parameters()
    key = "unet.out.2.weight"
    assert not torch.equal(baked[key], clean_params[key])  # the loaded clone baked it in
    assert np.array_equal(render(host, config, P1)[0], clean[0])
    assert_same(fake.parameters(), clean_params)  # unpatched, and the merge restored
    assert fake.model.current_lora_hash == "[]"
    # the user's next generation rebuilds and re-bakes their LoRA on the restored weights
    assert np.array_equal(pixels(fake.txt2img("<lora:detail> a red fox").images[0]), with_lora)
    assert_same(fake.parameters(), baked)
    te_key = "clip.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(baked[te_key], clean_params[te_key])  # the text encoder's LoRA too


def test_writes_follow_parameters_the_webui_replaces(reforge):
    from ldm_patched.modules import utils

    key, name = "model.diffusion_model.out.2.weight", "diffusion_model.out.2.weight"
    unet = reforge.model.forge_objects.unet.model
    original = utils.get_attr(unet, name).detach().clone()
    with LdmPatchedHost().open_slot() as slot:
        slot[key] = torch.ones_like(original)
        # a patcher's load/unload puts a new Parameter in place (set_attr_param)
        utils.set_attr_param(unet, name, utils.get_attr(unet, name).detach())
        slot[key] = torch.zeros_like(original)
        assert not utils.get_attr(unet, name).any() and not slot[key].any()
    assert torch.equal(utils.get_attr(unet, name), original)


def test_checkpoint_switch_in_settings_stops_the_run(fake, cfg, tiny_sd1_paths):
    opts = fake.shared.opts
    queued = opts.data_labels["sd_model_checkpoint"].onchange
    written = threading.Event()

    def onchange():  # Settings wrote the option; the reload now waits for the queue lock
        written.set()
        queued()

    opts.data_labels["sd_model_checkpoint"].onchange = onchange
    switch = threading.Thread(target=lambda: fake.select_checkpoint(tiny_sd1_paths[1]))
    runner = Runner(cfg(optimizer={"trials": 3, "seed": 0, "study": "s"}), LdmPatchedHost())
    events = []
    for event in runner.events():
        events.append(event)
        if isinstance(event, ev.TrialFinished) and event.number == 0:
            switch.start()
            written.wait()
    switch.join()
    failed = [e for e in events if isinstance(e, ev.TrialFinished) and e.state == "FAIL"]
    assert failed and "checkpoint selected in the WebUI changed" in failed[0].reason
    assert "checkpoint selected in the WebUI changed" in events[-1].reason
    # the user's switch ran after the run released the queue: the new checkpoint, as loaded
    assert fake.model.sd_model_checkpoint == str(tiny_sd1_paths[1])
    assert_same(fake.parameters(), fake.loaded_checkpoint(tiny_sd1_paths[1]))


def test_keep_best_stays_until_the_webui_loads_weights(fake, cfg, tiny_sd1_paths):
    host = LdmPatchedHost()
    original = pixels(fake.txt2img().images[0])
    before = fake.parameters()
    final = run_to_end(Runner(cfg(optimizer={"trials": 1, "seed": 0, "study": "keep"},
                                  after_run={"keep_best": True}), host))
    assert final.kept_trial == final.best_trial is not None
    assert host.kept_merge().trial == final.best_trial
    assert not torch.equal(fake.parameters()["unet.out.2.weight"],
                           before["unet.out.2.weight"])
    assert torch.equal(fake.model.cond_stage_model_empty_prompt, fake.model.get_learned_conditioning([""]))
    assert np.abs(pixels(fake.txt2img().images[0]) - original).mean() > 1.0
    if fake.profile == "reforge":
        fake.sd_models.reload_model_weights(forced_reload=True)  # a new model object
    else:  # Classic ignores forced_reload: another checkpoint is loaded instead
        fake.select_checkpoint(tiny_sd1_paths[1])
    assert host.kept_merge() is None


def test_fp8_unet_restores_bit_exact(tiny_sd1_paths, tiny_sd1_config_dir, cfg):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, profile="classic", fp8=True) as fake:
        before = fake.parameters()
        assert before["unet.out.2.weight"].dtype == torch.float8_e4m3fn
        final = run_to_end(Runner(cfg(optimizer={"trials": 1, "seed": 0, "study": "f8"}), LdmPatchedHost()))
        assert final.reason == "completed"
        assert_same(fake.parameters(), before)


def test_external_vae_is_left_in_place(reforge, tiny_sd1_paths):
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    reforge.use_external_vae({k[len("first_stage_model."):]: v for k, v in other.items()
                              if k.startswith("first_stage_model.")})
    key = "first_stage_model.decoder.conv_out.weight"
    live = reforge.model.forge_objects.vae.first_stage_model.decoder.conv_out.weight
    with LdmPatchedHost().open_slot() as slot:
        slot[key] = torch.zeros_like(live)
        assert torch.equal(live, other[key]) and not slot[key].any()
    assert torch.equal(live, other[key])


# --- SDXL: CLIP-G in the Hugging Face layout ------------------------------------------------------

@pytest.fixture(params=PROFILES)
def fake_xl(request, tiny_sdxl_paths, tiny_sdxl_config_dir):
    with installed(tiny_sdxl_paths, tiny_sdxl_config_dir, profile=request.param) as f:
        yield f


def test_sdxl_live_layout_of_clip_g(fake_xl, tiny_sdxl_paths):
    """What the slot's CLIP-G keys land on; every key's round trip is in tests/test_host_contract.py."""
    want = safetensors.torch.load_file(str(tiny_sdxl_paths[0]))
    other = safetensors.torch.load_file(str(tiny_sdxl_paths[1]))
    before = fake_xl.parameters()
    te = fake_xl.model.forge_objects.clip.cond_stage_model
    g = "conditioner.embedders.1.model."
    # the live layout: projection untransposed, fused in_proj split in three row blocks
    assert torch.equal(te.clip_g.text_projection, want[g + "text_projection"])
    assert torch.equal(te.clip_g.transformer.text_model.encoder.layers[0].self_attn.k_proj.weight,
                       want[g + "transformer.resblocks.0.attn.in_proj_weight"].chunk(3)[1])
    assert live_location(g + "transformer.resblocks.0.attn.in_proj_bias").names[2].endswith("v_proj.bias")
    host = LdmPatchedHost()
    assert host.model_config() == "sdxl-sgm"
    with host.open_slot() as slot:
        assert set(slot) == set(want)
        for key, value in want.items():
            assert torch.equal(slot[key], value), key
        for key, value in other.items():
            slot[key] = value
        for key, value in other.items():
            assert torch.equal(slot[key], value), key
        assert torch.equal(te.clip_g.text_projection, other[g + "text_projection"])
    assert_same(fake_xl.parameters(), before)

