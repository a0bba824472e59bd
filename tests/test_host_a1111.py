"""The A1111 1.10 host against the faithful fake WebUI (tests/fakes/a1111): real merges into the
hijacked LDM-layout model, real pictures rendered from its live weights, a real runner."""

import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import safetensors.torch
import torch
from fakes.a1111 import installed
from test_runner import make_config

from sd_optim.errors import ConfigError
from sd_optim.hosts.a1111 import A1111Host, HostStateError, checkpoint_key
from sd_optim.merging import MergeEngine
from sd_optim.merging._engine import _NoProgress
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.search.planning import make_planner

optuna.logging.set_verbosity(optuna.logging.WARNING)

P1 = {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1}


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


def assert_original(fake, path):
    """Every parameter equals the file bit-exact, under hijacked and un-hijacked names."""
    want = safetensors.torch.load_file(str(path))
    live = fake.parameters()
    assert {checkpoint_key(n) for n in live} == set(want)
    for name, value in live.items():
        assert torch.equal(value, want[checkpoint_key(name)]), name
    unhijacked = fake.unhijacked_state_dict()
    for key, value in want.items():
        assert torch.equal(unhijacked[key], value), key


def render(host, config, params):
    planner = make_planner(config, host.model_config())
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(params), slot, planner.model_config)
        return [pixels(g.image) for g in host.generate(job)]


def test_model_config_lists_and_refusals(fake, tiny_sd1_paths, tiny_sd1_config_dir):
    host = A1111Host()
    assert host.model_config() == "sd1-ldm"
    assert host.samplers()[:2] == ["DPM++ 2M", "DPM++ SDE"] and "LCM" in host.samplers()
    assert "Karras" in host.schedulers() and "Align Your Steps" in host.schedulers()
    assert sorted(c.path for c in host.checkpoints()) == sorted(str(p) for p in tiny_sd1_paths)
    second = A1111Host.open_slot(host)
    with host.open_slot(), pytest.raises(RuntimeError, match="already live"):  # at once, no wait
        second.__enter__()
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, load=False), \
            pytest.raises(HostStateError, match="no model is loaded"):
        A1111Host().model_config()


def test_unknown_sampler_names_the_webui_list(fake, cfg):
    config = cfg(payloads=[{"name": "p", "prompt": "x", "sampler": "Euler b"}])
    with pytest.raises(ConfigError, match=r"got 'Euler b' \(valid: DPM\+\+ 2M, DPM\+\+ SDE"):
        run_to_end(Runner(config, A1111Host()))


def test_text_encoder_writes_reset_the_cond_caches(fake, cfg, tiny_sd1_paths):
    host, config = A1111Host(), cfg()
    job = Runner(config, host)._jobs()[0][1]
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    before = pixels(fake.txt2img().images[0])
    empty_before = fake.model.cond_stage_model_empty_prompt
    with host.open_slot() as slot:
        for key, value in other.items():
            if key.startswith("cond_stage_model."):
                slot[key] = value
        stale = pixels(next(host.generate(job)).image)
        assert np.array_equal(stale, before)  # the fake really serves cached conds
        slot.commit()
        fresh = pixels(next(host.generate(job)).image)
        assert np.abs(fresh - before).mean() > 1.0
        empty = fake.model.cond_stage_model_empty_prompt
        assert torch.equal(empty, fake.model.get_learned_conditioning([""]))
        assert not torch.equal(empty, empty_before)
    assert fake.model.cond_stage_model_empty_prompt is empty_before
    assert np.array_equal(pixels(fake.txt2img().images[0]), before)
    assert_original(fake, tiny_sd1_paths[0])


def test_baked_lora_neither_leaks_into_trials_nor_resurrects(fake, cfg, tiny_sd1_paths):
    host, config = A1111Host(), cfg()
    clean = render(host, config, P1)
    with_lora = pixels(fake.txt2img("<lora:detail> a red fox").images[0])  # the user's last generation
    assert fake.networks.loaded_networks and not torch.equal(
        fake.parameters()["model.diffusion_model.out.2.weight"],
        safetensors.torch.load_file(str(tiny_sd1_paths[0]))["model.diffusion_model.out.2.weight"])
    assert np.array_equal(render(host, config, P1)[0], clean[0])
    assert_original(fake, tiny_sd1_paths[0])
    assert [n.name for n in fake.networks.loaded_networks] == ["detail"]
    assert np.array_equal(pixels(fake.txt2img("<lora:detail> a red fox").images[0]), with_lora)


def test_external_vae_is_left_in_place(fake, tiny_sd1_paths):
    other = safetensors.torch.load_file(str(tiny_sd1_paths[1]))
    external = {k[len("first_stage_model."):]: v for k, v in other.items() if k.startswith("first_stage_model.")}
    fake.use_external_vae(external)
    key = "first_stage_model.decoder.conv_out.weight"
    live = fake.model.first_stage_model.decoder.conv_out.weight
    with A1111Host().open_slot() as slot:
        slot[key] = torch.zeros_like(live)
        assert torch.equal(live, other[key]) and not slot[key].any()
    assert torch.equal(live, other[key])


def test_checkpoint_switch_in_settings_stops_the_run(fake, cfg, tiny_sd1_paths):
    opts = fake.shared.opts
    target = fake.sd_models.checkpoint_aliases[tiny_sd1_paths[1].name].title
    queued = opts.data_labels["sd_model_checkpoint"].onchange
    written = threading.Event()

    def onchange():  # Settings wrote the option; the reload now waits for the queue lock
        written.set()
        queued()

    opts.data_labels["sd_model_checkpoint"].onchange = onchange
    switch = threading.Thread(target=lambda: opts.set("sd_model_checkpoint", target))
    runner = Runner(cfg(optimizer={"trials": 3, "seed": 0, "study": "s"}), A1111Host())
    events = []
    for event in runner.events():
        events.append(event)
        if isinstance(event, ev.TrialFinished) and event.number == 0:
            switch.start()
            written.wait()
    switch.join()
    failed = [e for e in events if isinstance(e, ev.TrialFinished) and e.state == "FAIL"]
    assert failed and "checkpoint selected in the WebUI changed" in failed[0].reason
    assert "checkpoint selected in the WebUI changed" in events[-1].reason  # the run says why
    # the user's switch ran after the run released the queue: the new checkpoint, intact
    assert fake.model.sd_model_checkpoint == str(tiny_sd1_paths[1])
    assert_original(fake, tiny_sd1_paths[1])


def test_trial_images_carry_the_trial_in_their_infotext(fake, cfg):
    runner = Runner(cfg(optimizer={"trials": 1, "seed": 0, "study": "info"}), A1111Host())
    run_to_end(runner)
    row = next(e for e in runner.history if isinstance(e, ev.ImageScored))
    assert "sd-optim: info trial 0" in row.infotext
    assert '"diffuser.all.alpha=' in row.infotext  # A1111 quotes a value holding commas


def test_keep_best_leaves_the_merge_loaded_until_the_webui_reloads(fake, cfg, tiny_sd1_paths):
    import sd_mecha

    host = A1111Host()
    original = fake.txt2img().images[0]
    runner = Runner(cfg(optimizer={"trials": 2, "seed": 0, "study": "keep"},
                        after_run={"keep_best": True}), host)
    final = run_to_end(runner)
    assert final.kept_trial == final.best_trial is not None and not final.after_run_note
    kept = host.kept_merge()
    assert (kept.study, kept.trial) == ("keep", final.best_trial)
    assert kept.infotext_params()["sd-optim merge"] == f"keep trial {final.best_trial}"
    # the live weights are the best trial's merge (what sd-mecha computes for its recipe)
    want = sd_mecha.merge(runner.state.planner.recipe(final.best_params), merge_device="cpu",
                          output_dtype=torch.float32, tqdm=_NoProgress)
    live = {checkpoint_key(n): v for n, v in fake.parameters().items()}
    for key in ("model.diffusion_model.out.2.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert torch.allclose(live[key], want[key].to(live[key].dtype), atol=1e-6), key
    # bookkeeping untouched (no reload), conds from the kept text encoder, the user's queue free
    assert fake.model.sd_model_checkpoint == str(tiny_sd1_paths[0])
    assert torch.equal(fake.model.cond_stage_model_empty_prompt, fake.model.get_learned_conditioning([""]))
    assert np.abs(pixels(fake.txt2img().images[0]) - pixels(original)).mean() > 1.0
    # a reload of the same checkpoint drops the merge, and the host knows
    fake.sd_models.reload_model_weights(forced_reload=True)
    assert host.kept_merge() is None
    assert_original(fake, tiny_sd1_paths[0])


def test_save_best_writes_a_new_checkpoint_with_its_recipe(fake, cfg, tiny_sd1_paths):
    host = A1111Host()
    final = run_to_end(Runner(cfg(optimizer={"trials": 2, "seed": 0, "study": "save"},
                                  after_run={"save_best": True}), host))
    path = Path(final.saved_checkpoint)
    assert path.parent == Path(fake.sd_models.model_path)
    assert path.name == f"save-trial{final.best_trial}.safetensors"
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
    assert "merge_method" in meta["mecha_recipe"] or "model" in meta["mecha_recipe"]
    assert path.name in [Path(c.path).name for c in host.checkpoints()]  # the list was refreshed
    assert_original(fake, tiny_sd1_paths[0])  # saving alone restores the model
    again = run_to_end(Runner(cfg(optimizer={"trials": 1, "seed": 0, "study": "save"},
                                  after_run={"save_best": True, "save_name": path.stem}),
                              host, RunOptions(resume="save")))
    assert Path(again.saved_checkpoint).name == f"{path.stem}-2.safetensors"  # never overwritten


# --- SDXL and fp8 storage ---------------------------------------------------------------------


@pytest.fixture
def fake_xl(tiny_sdxl_paths, tiny_sdxl_config_dir):
    with installed(tiny_sdxl_paths, tiny_sdxl_config_dir) as f:
        yield f


@pytest.fixture
def cfg_xl(tiny_sdxl_paths, tiny_sdxl_config_dir, tmp_path):
    def make(**overrides):
        return make_config(tiny_sdxl_paths, tiny_sdxl_config_dir, tmp_path / "runs",
                           **{"optimizer": {"trials": 2},
                              "guide": {"diffuser": ["single"], "clip_l": ["single"], "clip_g": ["single"]},
                              **overrides})

    return make


def test_sdxl_slot_has_exactly_the_checkpoint_keys_behind_the_hijack(fake_xl, tiny_sdxl_paths):
    """Every key (tests/test_host_contract.py) under the hijack's ``wrapped`` names, and no other:
    the hijack's ``cond_stage_model`` alias of the conditioner is not a second set of keys."""
    want = safetensors.torch.load_file(str(tiny_sdxl_paths[0]))
    names = {n for n, _ in fake_xl.model.named_parameters()}
    assert "conditioner.embedders.1.wrapped.model.token_embedding.wrapped.weight" in names  # hijacked
    with A1111Host().open_slot() as slot:
        assert set(slot) == set(want)


def test_sdxl_clip_g_writes_reset_the_cond_caches(fake_xl, cfg_xl, tiny_sdxl_paths):
    host = A1111Host()
    job = Runner(cfg_xl(), host)._jobs()[0][1]
    other = safetensors.torch.load_file(str(tiny_sdxl_paths[1]))
    before = pixels(fake_xl.txt2img().images[0])
    with host.open_slot() as slot:
        for key, value in other.items():
            if key.startswith("conditioner.embedders.1."):
                slot[key] = value
        assert np.array_equal(pixels(next(host.generate(job)).image), before)  # cached conds
        slot.commit()
        assert np.abs(pixels(next(host.generate(job)).image) - before).mean() > 1.0
        empty = fake_xl.model.get_learned_conditioning([""])["crossattn"]
        assert torch.equal(fake_xl.model.cond_stage_model_empty_prompt, empty)
    assert np.array_equal(pixels(fake_xl.txt2img().images[0]), before)
    assert_original(fake_xl, tiny_sdxl_paths[0])


@pytest.fixture
def fake_fp8(tiny_sd1_paths, tiny_sd1_config_dir):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir, load=False) as f:
        f.shared.opts.fp8_storage = "Enable"
        f.shared.opts.cache_fp16_weight = True
        f.sd_models.load_model()
        yield f


def raw(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a tensor (torch.equal has no fp8 kernel on the CPU)."""
    return t.contiguous().view(torch.uint8) if t.dtype.itemsize == 1 else t


def fp16_copies(fake):
    return {n: (getattr(m, "fp16_weight", None), getattr(m, "fp16_bias", None))
            for n, m in fake.model.named_modules() if hasattr(m, "fp16_weight")}


def test_fp8_storage_restores_bit_exact_and_keeps_fp16_copies(fake_fp8, cfg, tiny_sd1_paths):
    fake = fake_fp8
    before = fake.parameters()
    key = "model.diffusion_model.out.2.weight"
    assert before[key].dtype == torch.float8_e4m3fn
    copies = fp16_copies(fake)
    assert copies
    run_to_end(Runner(cfg(optimizer={"trials": 2, "seed": 0, "study": "f8"}), A1111Host()))
    after = fake.parameters()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(raw(after[name]), raw(value)), name
    now = fp16_copies(fake)
    assert all(now[n][0] is w and now[n][1] is b for n, (w, b) in copies.items())
    # keep-best: the Lora extension's fp16 base copies follow the kept merge
    final = run_to_end(Runner(cfg(optimizer={"trials": 1, "seed": 1, "study": "f8k"},
                                  after_run={"keep_best": True}), A1111Host()))
    assert final.kept_trial == 0
    module = dict(fake.model.named_modules())["model.diffusion_model.out.2"]
    assert not torch.equal(raw(module.weight), raw(before[key]))
    assert not torch.equal(module.fp16_weight, copies["model.diffusion_model.out.2"][0])
    # the fp16 copy is the merge before fp8 rounding: within fp8's resolution of the live weight
    assert torch.allclose(module.fp16_weight.float(), module.weight.float(), rtol=0.07, atol=2e-3)
