"""The optimizer loop end to end on tiny real models: real merges, real images, real Optuna."""


import json
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import safetensors.torch
import sd_mecha
import torch

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError, StudyMismatchError
from sd_optim.merging import MergeEngine
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.scoring.image_stats import ImageStatsScorer
from sd_optim.search.planning import make_planner
from sd_optim.tiny_models import TINY_SIZE

optuna.logging.set_verbosity(optuna.logging.WARNING)


@sd_mecha.merge_method
def sd_optim_test_fragile_sum(
    a: sd_mecha.Parameter(torch.Tensor),
    b: sd_mecha.Parameter(torch.Tensor),
    alpha: sd_mecha.Parameter(torch.Tensor) = 0.5,
) -> sd_mecha.Return(torch.Tensor):
    """weighted_sum that refuses alpha above 0.6: a user-registered method with a failure mode."""
    if alpha.max() > 0.6:
        raise ValueError(f"alpha too high: {float(alpha.max()):.3f}")
    return torch.lerp(a, b, alpha)


def make_config(paths, config_dir, out, **overrides):
    data = {
        "models": [{"path": str(paths[0]), "name": "a"}, {"path": str(paths[1]), "name": "b"}],
        "diffusers_config": str(config_dir),
        "merge": {"method": "weighted_sum"},
        "guide": {"diffuser": ["single"], "clip_l": ["single"]},
        "payloads": [{"name": "p", "prompt": "a red fox", "seed": 3, "steps": 2, "cfg_scale": 5,
                      "sampler": "Euler", "width": TINY_SIZE, "height": TINY_SIZE}],
        "scorers": ["image_stats"],
        "optimizer": {"sampler": "random", "trials": 3, "seed": 0, "study": "s"},
        "output_dir": str(out),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data)


def read_rows(run_dir):
    from sd_optim.run.artifacts import RunFolder

    return RunFolder(run_dir).read_trials()


def run(config, host, **options):
    return run_to_end(Runner(config, host, RunOptions(**options)))


def assert_original(host, path):
    original = safetensors.torch.load_file(str(path))
    with host.open_slot() as slot:
        for key, value in original.items():
            if key in slot:
                assert torch.equal(slot[key], value.to(slot[key].dtype)), key


def render(host, config, params):
    planner = make_planner(config, host.model_config())
    engine = MergeEngine()
    runner = Runner(config, host)
    with host.open_slot() as slot:
        engine.apply(planner.recipe(params), slot, planner.model_config)
        return [np.asarray(g.image) for _, job in runner._jobs() for g in host.generate(job)]


@pytest.fixture
def cfg(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    return lambda **kw: make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", **kw)


def test_parameters_change_the_picture_and_repeat_exactly(sd1_host, cfg):
    config = cfg()
    a = render(sd1_host, config, {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1})
    b = render(sd1_host, config, {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9})
    a2 = render(sd1_host, config, {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1})
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 1.0
    assert np.array_equal(a[0], a2[0])


def test_run_writes_artifacts_and_restores(sd1_host, cfg, tiny_sd1_paths):
    final = run(cfg(), sd1_host)
    assert final.reason == "completed" and final.trials == 3
    rows = read_rows(final.run_dir)
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert all(r["state"] == "COMPLETE" and "image_stats" in r["scores"]["p"] for r in rows)
    assert set(rows[0]["timings"]) == {"suggest", "merge", "generate", "score", "other"}
    from PIL import Image

    png = Image.open(f"{final.run_dir}/{rows[0]['images'][0]['path']}")
    meta = json.loads(png.text["sd_optim"])
    assert meta["params"] == rows[0]["params"] and "Steps: 2" in png.text["parameters"]
    assert sd_mecha.deserialize_path(__import__("pathlib").Path(final.best_recipe))
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_best_mecha_reproduces_the_slot(sd1_host, cfg):
    config = cfg(guide={"diffuser": [{"strategy": "select", "patterns": ["IN0*", "OUT1*"]}],
                        "clip_l": ["single"]})
    final = run(config, sd1_host)
    planner = make_planner(config, "sd1-ldm")
    with sd1_host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(final.best_params), slot, "sd1-ldm")
        live = {k: slot[k].clone() for k in slot}
    recipe = sd_mecha.deserialize_path(__import__("pathlib").Path(final.best_recipe))
    merged = sd_mecha.merge(recipe, output_dtype=torch.float32)
    merged.pop("__metadata__", None)
    compared = 0
    for key, value in merged.items():
        if value.is_floating_point():
            assert torch.equal(live[key], value), key  # same arithmetic: bit-exact
            compared += 1
    assert compared > 1000


def test_loop_improves_an_objective_it_can_steer(sd1_host, cfg, tmp_path):
    from sd_optim.demo import render_references

    hidden = {"diffuser.all.alpha": 0.8, "clip_l.all.alpha": 0.2}
    refs = tmp_path / "refs"
    config = cfg(scorers=[{"name": "reference", "options": {"folder": str(refs)}}],
                 optimizer={"sampler": "tpe", "trials": 16, "sampler_options": {"n_startup_trials": 5}})
    render_references(config, sd1_host, hidden, refs)
    final = run(config, sd1_host)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{final.run_dir}/study.db")
    values = [t.value for t in study.trials]
    assert abs(final.best_params["diffuser.all.alpha"] - 0.8) < 0.2
    assert np.mean(values[-5:]) > np.mean(values[:5])  # guided trials beat the random start-up ones


def test_resume_continues_numbering_and_refuses_other_models(sd1_host, cfg, tiny_sd1_paths):
    run(cfg(), sd1_host)
    final = run(cfg(), sd1_host, resume="s", trials=2)
    rows = read_rows(final.run_dir)
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4]
    other = cfg(models=[{"path": str(tiny_sd1_paths[0]), "name": "a"},
                        {"path": str(tiny_sd1_paths[2]), "name": "b"}])
    with pytest.raises(StudyMismatchError, match="models: study has"):
        run(other, sd1_host, resume="s")
    with pytest.raises(StudyMismatchError, match="space: study has"):
        run(cfg(guide={"diffuser": ["single"], "clip_l": ["none"]}), sd1_host, resume="s")
    with pytest.raises(StudyMismatchError, match="scoring: study has"):  # raw scores: other values
        run(cfg(scoring={"normalize": False}), sd1_host, resume="s")
    assert run(cfg(scoring={"vram_gb": 4}), sd1_host, resume="s", trials=1).trials == 1  # a memory bound: the same
    with pytest.raises(ConfigError, match="already exists"):
        run(cfg(), sd1_host)


def test_fork_enqueues_the_parent_parameters(sd1_host, cfg):
    parent = run(cfg(), sd1_host)
    parent_study = optuna.load_study(study_name="s", storage=f"sqlite:///{parent.run_dir}/study.db")
    child = run(cfg(optimizer={"study": "child"}), sd1_host, fork="s")
    child_study = optuna.load_study(study_name="child", storage=f"sqlite:///{child.run_dir}/study.db")
    assert [t.params for t in child_study.trials] == [t.params for t in parent_study.trials]


def test_failing_trial_is_told_fail_and_run_goes_on(sd1_host, cfg, tiny_sd1_paths):
    config = cfg(merge={"method": "sd_optim_test_fragile_sum"}, optimizer={"trials": 6})
    runner = Runner(config, sd1_host)
    final = run_to_end(runner)
    finished = [e for e in runner.history if isinstance(e, ev.TrialFinished)]
    failed = [e for e in finished if e.state == "FAIL"]
    assert failed and len(finished) == 6 and final.reason == "completed"
    assert all("alpha too high" in e.reason for e in failed)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{final.run_dir}/study.db")
    t = study.trials[failed[0].number]
    assert t.state == optuna.trial.TrialState.FAIL and "alpha too high" in t.user_attrs["fail_reason"]
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_on_trial_error_stop_ends_the_run_and_restores(sd1_host, cfg, tiny_sd1_paths):
    config = cfg(merge={"method": "sd_optim_test_fragile_sum"},
                 optimizer={"trials": 20, "on_trial_error": "stop"},
                 guide={"diffuser": ["single"], "clip_l": ["single"],
                        "bounds": {"alpha": {"low": 0.7, "high": 1.0}}})
    final = run(config, sd1_host)
    assert final.reason == "trial failed" and final.trials == 1
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_exception_mid_trial_restores_the_weights(sd1_host, cfg, tiny_sd1_paths):
    runner = Runner(cfg(), sd1_host)
    gen = runner.events()
    for event in gen:
        if isinstance(event, ev.TrialMerged):
            break  # the consumer goes away after the merge was written into the slot
    gen.close()
    assert_original(sd1_host, tiny_sd1_paths[0])
    trial = runner.state.study.trials[0]  # told FAIL, not left RUNNING in the study
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["fail_reason"] == "stopped"


def test_exception_inside_the_loop_restores_and_reports(sd1_host, cfg, tiny_sd1_paths):
    runner = Runner(cfg(), sd1_host)
    gen = runner.events()
    for event in gen:
        if isinstance(event, ev.TrialMerged):
            break
    with pytest.raises(SystemExit):
        gen.throw(SystemExit(3))
    assert isinstance(runner.history[-1], ev.RunFailed)
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_keyboard_interrupt_mid_trial_ends_the_run_with_its_summary(sd1_host, cfg, tiny_sd1_paths):
    """A second Ctrl-C raises KeyboardInterrupt wherever the main thread is: the run still ends
    with its summary, the model restored and the trial in flight failed."""
    runner = Runner(cfg(), sd1_host)
    gen = runner.events()
    for event in gen:
        if isinstance(event, ev.TrialMerged):
            break
    final = gen.throw(KeyboardInterrupt())
    assert isinstance(final, ev.RunFinished) and final.reason == "interrupted (Ctrl-C)"
    assert_original(sd1_host, tiny_sd1_paths[0])
    trial = runner.state.study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted (KeyboardInterrupt)"


def test_missing_wildcard_is_a_config_error(sd1_host, cfg, tmp_path):
    config = cfg(payloads=[{"name": "p", "prompt": "a __missing__", "steps": 2}], wildcards_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"payloads\[0\]: wildcard __missing__"):
        run(config, sd1_host)


def test_stop_request_fails_the_trial_in_flight(sd1_host, cfg, tiny_sd1_paths):
    config = cfg(payloads=[{"name": "p", "prompt": "fox", "steps": 2, "width": TINY_SIZE,
                            "height": TINY_SIZE, "batch_size": 3, "sampler": "Euler"}])
    runner = Runner(config, sd1_host)
    events = []
    for event in runner.events():
        events.append(event)
        if isinstance(event, ev.TrialMerged) and event.number == 1:
            runner.control.stop()
    final = events[-1]
    assert final.reason == "stopped"
    last = [e for e in events if isinstance(e, ev.TrialFinished)][-1]
    assert last.number == 1 and last.state == "FAIL" and last.reason == "stopped"
    assert not [e for e in events if isinstance(e, ev.ImageScored) and e.trial == 1]
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_early_stopping_ends_the_run(sd1_host, cfg):
    config = cfg(optimizer={"trials": 30, "early_stopping": {"patience": 2, "min_improvement": 10.0}})
    final = run(config, sd1_host)
    assert final.reason == "early stopping" and final.trials == 3


def test_baselines_and_reference_rows(sd1_host, cfg):
    config = cfg(optimizer={"baseline": ["defaults", "midpoint"], "score_inputs": True, "trials": 2})
    final = run(config, sd1_host)
    rows = read_rows(final.run_dir)
    refs = [r for r in rows if r["kind"] == "reference"]
    trials = [r for r in rows if r["kind"] == "trial"]
    assert [r["model"] for r in refs] == ["a", "b"] and refs[0]["value"] != refs[1]["value"]
    assert trials[0]["params"] == {"diffuser.all.alpha": 0.5, "clip_l.all.alpha": 0.5}


def test_mixed_architectures_are_refused(sd1_host, cfg, tiny_sd1_paths, tiny_sdxl_paths):
    config = cfg(models=[{"path": str(tiny_sd1_paths[0]), "name": "a"},
                         {"path": str(tiny_sdxl_paths[0]), "name": "x"}])
    with pytest.raises(ConfigError, match="sdxl-sgm but the loaded model is sd1-ldm"):
        run(config, sd1_host)


def test_unknown_sampler_is_refused_before_anything_runs(sd1_host, cfg):
    config = cfg(payloads=[{"name": "p", "prompt": "x", "sampler": "Euler b", "scheduler": "Karras"}])
    with pytest.raises(ConfigError, match=r"payloads\[0\].sampler: not a sampler of this host, got 'Euler b'"):
        run(config, sd1_host)
    assert not (config.resolve_path(config.output_dir) / "s").exists()


def test_an_optuna_sampler_by_import_path_runs_the_study_and_a_missing_one_is_refused_first(sd1_host, cfg):
    final = run(cfg(optimizer={"sampler": "optuna.samplers.NSGAIISampler", "sampler_options": {"population_size": 2},
                               "trials": 3}), sd1_host)
    assert final.completed == 3
    config = cfg(optimizer={"sampler": "sd_optim_nowhere.Sampler", "study": "s2"})
    with pytest.raises(ConfigError, match=r"optimizer.sampler: cannot import 'sd_optim_nowhere'"):
        run(config, sd1_host)
    assert not (config.resolve_path(config.output_dir) / "s2").exists()


def test_trial_limit_can_change_during_a_run(sd1_host, cfg):
    runner = Runner(cfg(optimizer={"trials": 10}), sd1_host)
    for event in runner.events():
        if isinstance(event, ev.TrialFinished) and event.number == 0:
            runner.control.trial_limit = 2  # e.g. the tab's trial count edited mid-run
        final = event
    assert final.reason == "completed" and final.trials == 2
    assert [e.kind for e in runner.history].count("TrialFinished") == 2


def test_host_interrupt_stops_the_run(sd1_host, cfg, tiny_sd1_paths):
    runner = Runner(cfg(), sd1_host)
    events = []
    for event in runner.events():
        events.append(event)
        if isinstance(event, ev.TrialMerged):
            sd1_host.interrupt()  # the host's own Interrupt (the WebUI button, the app's Stop)
    last = [e for e in events if isinstance(e, ev.TrialFinished)][-1]
    assert (last.number, last.state, last.reason) == (0, "FAIL", "interrupted")
    assert events[-1].reason == "interrupted"
    assert_original(sd1_host, tiny_sd1_paths[0])
    assert run(cfg(optimizer={"study": "after"}), sd1_host).reason == "completed"  # not sticky


def test_shared_storage_url_lets_a_second_worker_continue_the_study(sd1_host, cfg, tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    first = run(cfg(optimizer={"storage": url, "trials": 2}), sd1_host)
    second = run(cfg(optimizer={"storage": url, "trials": 2}), sd1_host, resume="s")  # another worker
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert first.run_dir == second.run_dir and not (tmp_path / "runs" / "s" / "study.db").exists()


def test_resume_refuses_swapped_model_order(sd1_host, cfg, tiny_sd1_paths):
    run(cfg(), sd1_host)
    swapped = cfg(models=[{"path": str(tiny_sd1_paths[1]), "name": "b"},
                          {"path": str(tiny_sd1_paths[0]), "name": "a"}], host_model="b")
    with pytest.raises(StudyMismatchError, match="models: study has"):
        run(swapped, sd1_host, resume="s")


def test_resume_of_a_missing_study_leaves_no_folder(sd1_host, cfg):
    config = cfg()
    with pytest.raises(ConfigError, match="--resume: no study named 'nope'"):
        run(config, sd1_host, resume="nope")
    assert not (config.resolve_path(config.output_dir) / "nope").exists()


def test_stop_while_scoring_the_inputs_ends_cleanly(sd1_host, cfg, tiny_sd1_paths):
    runner = Runner(cfg(optimizer={"score_inputs": True}), sd1_host)
    events = []
    for event in runner.events():
        events.append(event)
        if isinstance(event, ev.ImageScored) and event.trial == -1:
            runner.control.stop()
    assert isinstance(events[-1], ev.RunFinished) and events[-1].reason == "stopped"
    assert not [e for e in events if isinstance(e, ev.TrialStarted)]
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_fork_skips_parameter_sets_outside_the_new_space(sd1_host, cfg):
    parent = run(cfg(optimizer={"trials": 4}), sd1_host)
    parent_study = optuna.load_study(study_name="s", storage=f"sqlite:///{parent.run_dir}/study.db")
    narrow = cfg(optimizer={"study": "narrow", "trials": 1},
                 guide={"diffuser": ["single"], "clip_l": ["single"], "bounds": {"alpha": {"low": 0.5, "high": 1.0}}})
    child = run(narrow, sd1_host, fork="s")
    child_study = optuna.load_study(study_name="narrow", storage=f"sqlite:///{child.run_dir}/study.db")
    inside = [t.params for t in parent_study.trials if min(t.params.values()) >= 0.5]
    forked = [t.system_attrs["fixed_params"] for t in child_study.trials
              if "sd_optim.forked_trial" in t.user_attrs]
    assert len(inside) < 4  # the random parent tried values below 0.5 too
    assert sorted(map(str, forked)) == sorted(map(str, inside))


def test_pause_between_trials_and_resume_from_another_thread(sd1_host, cfg):
    import queue
    import threading

    runner = Runner(cfg(optimizer={"trials": 2}), sd1_host)
    events: queue.Queue = queue.Queue()
    worker = threading.Thread(target=lambda: [events.put(e) for e in runner.events()], daemon=True)
    runner.control.pause()  # paused before the first trial: the worker must wait for us
    worker.start()
    seen = []
    while True:
        event = events.get(timeout=120)
        seen.append(event)
        if isinstance(event, ev.RunPaused):
            assert not any(isinstance(e, ev.TrialStarted) for e in seen)
            runner.control.resume()
        if isinstance(event, ev.RunFinished):
            break
    worker.join(timeout=60)
    kinds = [e.kind for e in seen]
    assert kinds.index("RunPaused") < kinds.index("RunResumed") < kinds.index("TrialStarted")
    assert seen[-1].trials == 2


def test_the_hosts_interrupt_stops_a_paused_run(sd1_host, cfg):
    import threading

    runner = Runner(cfg(optimizer={"trials": 5}), sd1_host)
    paused = threading.Event()
    runner.listeners.append(lambda e: paused.set() if isinstance(e, ev.RunPaused) else None)
    runner.control.pause()
    worker = threading.Thread(target=lambda: run_to_end(runner), daemon=True)
    worker.start()
    assert paused.wait(60)
    sd1_host.interrupt()  # the WebUI's Interrupt: no call into the run's controls
    worker.join(timeout=60)
    assert not worker.is_alive()
    final = runner.history[-1]
    assert isinstance(final, ev.RunFinished) and final.trials == 0 and final.reason != "completed"


def test_save_best_standalone_writes_into_the_run_folder(sd1_host, cfg, tiny_sd1_paths):
    final = run(cfg(optimizer={"trials": 2, "seed": 0, "study": "sb"}, after_run={"save_best": True}),
                sd1_host)
    path = Path(final.saved_checkpoint)
    assert path == Path(final.run_dir) / f"sb-trial{final.best_trial}.safetensors"
    with safetensors.safe_open(str(path), "pt") as f:
        assert "mecha_recipe" in f.metadata()
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_keep_best_standalone_leaves_the_merge_in_the_pipeline(cfg, tiny_sd1_paths, tiny_sd1_config_dir):
    from sd_optim.hosts.diffusers_host import DiffusersHost

    host = DiffusersHost(tiny_sd1_paths[0], config_dir=tiny_sd1_config_dir)
    config = cfg(optimizer={"trials": 2, "seed": 0, "study": "kb"}, after_run={"keep_best": True})
    final = run(config, host)
    assert final.kept_trial == final.best_trial and host.kept_merge().trial == final.best_trial
    assert host.kept_merge().infotext_params()["sd-optim recipe"] == final.best_recipe
    want = render_keys(config, final.best_params)
    with host.open_slot() as slot:
        for key in ("model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_out.weight"):
            assert torch.allclose(slot[key], want[key], atol=1e-6), key


def render_keys(config, params):
    import sd_mecha

    from sd_optim.merging._engine import _NoProgress

    recipe = make_planner(config, "sd1-ldm").recipe(params)
    return sd_mecha.merge(recipe, merge_device="cpu", output_dtype=torch.float32, tqdm=_NoProgress)


@pytest.fixture
def percent_scorer(monkeypatch):
    """A scorer registered for the test whose scores run 0–100 (a constant 40)."""
    from sd_optim.scoring import base as scoring_base
    from sd_optim.scoring.base import Scorer, register_scorer

    monkeypatch.setattr(scoring_base, "_REGISTRY", dict(scoring_base._REGISTRY))

    class Percent(Scorer):
        name = "percent"
        native_range = (0.0, 100.0)

        def score(self, images, ctx):
            return [40.0] * len(images)

    return register_scorer(Percent)


@pytest.mark.parametrize("normalize", [True, False])
def test_scores_are_combined_on_one_scale_and_kept_raw(sd1_host, cfg, percent_scorer, normalize):
    config = cfg(scorers=["percent", "image_stats"], scoring={"normalize": normalize},
                 optimizer={"trials": 1, "score_inputs": True})
    final = run(config, sd1_host)
    rows = read_rows(final.run_dir)
    trial = next(r for r in rows if r["kind"] == "trial")
    stats = trial["scores"]["p"]["image_stats"][0]
    assert trial["scores"]["p"]["percent"] == [40.0]  # raw either way
    assert trial["value"] == pytest.approx((0.4 + stats) / 2 if normalize else (40.0 + stats) / 2)
    ref = next(r for r in rows if r["kind"] == "reference")  # the input models' rows alike
    assert ref["value"] < 1.0 if normalize else ref["value"] > 20.0


def test_scorers_over_their_memory_bound_wait_off_the_device_between_trials(sd1_host, cfg, tmp_path, monkeypatch):
    from sd_optim.scoring.base import BackboneCache
    from sd_optim.scoring.tiny import write_tiny_scorers

    offloads, restores = [], []
    offload, restore = BackboneCache.offload, BackboneCache.restore
    monkeypatch.setattr(BackboneCache, "offload", lambda self: offloads.append(1) or offload(self))
    monkeypatch.setattr(BackboneCache, "restore",
                        lambda self, device: restores.append(self.offloaded) or restore(self, device))

    options = write_tiny_scorers(tmp_path / "scorer-models")
    scorers = [{"name": "clip_score", "options": options["clip_score"]},
               {"name": "laion_aesthetic", "options": options["laion_aesthetic"]}]

    def run_with(budget):
        config = cfg(scorers=scorers, models_dir=str(tmp_path / "scorer-models"),
                     scoring={"vram_gb": budget}, optimizer={"trials": 2, "study": f"vram-{budget}"})
        final = run_to_end(Runner(config, sd1_host))
        return [r["scores"] for r in read_rows(final.run_dir) if r["kind"] == "trial"]

    unbounded = run_with(0.0)
    assert offloads == [] and restores == [False, False]
    bounded = run_with(1e-9)  # any model is over it: offloaded after every trial, back before the next
    assert len(offloads) == 2 and restores[2:] == [False, True]
    assert bounded == unbounded  # the same scores either way


def test_merge_precision_is_what_every_merge_of_the_run_computes_in(sd1_host, cfg, tmp_path):
    """merge_precision: bf16 reaches the run's engine and the saved checkpoint, which equals
    sd_mecha.merge of best.mecha at that precision."""
    config = cfg(merge_precision="bf16", optimizer={"trials": 1})
    engine = MergeEngine()
    runner = Runner(config, sd1_host, engine=engine)
    final = run_to_end(runner)
    assert engine.merge_dtype == torch.bfloat16
    best = runner.state.study.best_trial
    saved = runner.save_checkpoint(runner.state, best, runner.state.planner.recipe(best.params), "bf16")
    recipe = sd_mecha.deserialize_path(__import__("pathlib").Path(final.best_recipe))
    expected = sd_mecha.merge(recipe, merge_dtype=torch.bfloat16, output_dtype=torch.float16)
    written = safetensors.torch.load_file(str(saved))
    assert all(torch.equal(written[k], v) for k, v in expected.items() if k != "__metadata__")


def test_a_prompt_set_is_scored_while_the_next_one_generates(sd1_host, cfg, monkeypatch):
    """The scorer of set ``p`` waits for the generation of set ``q`` to start: it can finish only
    when scoring runs on its own thread beside generation. Events and scores keep set order."""
    payload = {"steps": 2, "width": TINY_SIZE, "height": TINY_SIZE, "sampler": "Euler"}
    config = cfg(payloads=[{"name": "p", "prompt": "fox", **payload}, {"name": "q", "prompt": "owl", **payload}],
                 optimizer={"trials": 2})
    generating_q, threads = threading.Event(), set()
    generate, score = type(sd1_host).generate, ImageStatsScorer.score

    def watched_generate(self, job, *args, **kwargs):
        if job.prompt == "owl":
            generating_q.set()
        yield from generate(self, job, *args, **kwargs)

    def waiting_score(self, images, ctx):
        threads.add(threading.current_thread().name)
        if images[0].payload == "p":
            assert generating_q.wait(30), "set q did not generate while set p was scored"
            generating_q.clear()
        return score(self, images, ctx)

    monkeypatch.setattr(type(sd1_host), "generate", watched_generate)
    monkeypatch.setattr(ImageStatsScorer, "score", waiting_score)
    runner = Runner(config, sd1_host)
    final = run_to_end(runner)
    assert final.reason == "completed" and final.trials == 2
    assert threads and all(name.startswith("sd-optim-score") for name in threads)
    for trial in (0, 1):
        sets = [e.payload for e in runner.history if isinstance(e, ev.ImageScored) and e.trial == trial]
        assert sets == ["p", "q"]
    done = [e for e in runner.history if isinstance(e, ev.TrialFinished)]
    assert all(e.state == "COMPLETE" and set(e.per_payload) == {"p", "q"} for e in done)


def test_a_trial_that_fails_abandons_the_sets_still_being_scored(sd1_host, cfg, monkeypatch):
    """Generation fails in set q while set p's scorer is running: the scorer is told to stop
    (``should_stop``), the trial fails with the generation's error and the run goes on."""
    payload = {"steps": 2, "width": TINY_SIZE, "height": TINY_SIZE, "sampler": "Euler"}
    config = cfg(payloads=[{"name": "p", "prompt": "fox", **payload}, {"name": "q", "prompt": "owl", **payload}],
                 optimizer={"trials": 2})
    generate, score, told = type(sd1_host).generate, ImageStatsScorer.score, []

    def failing_generate(self, job, *args, **kwargs):
        if job.prompt == "owl" and not told:
            raise RuntimeError("generation broke")
        yield from generate(self, job, *args, **kwargs)

    def slow_score(self, images, ctx):
        if images[0].payload == "p" and not told:
            deadline = time.monotonic() + 30
            while not ctx.should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)
            told.append(ctx.should_stop())
        return score(self, images, ctx)

    monkeypatch.setattr(type(sd1_host), "generate", failing_generate)
    monkeypatch.setattr(ImageStatsScorer, "score", slow_score)
    runner = Runner(config, sd1_host)
    final = run_to_end(runner)
    assert told == [True] and final.reason == "completed"
    states = [(e.state, e.reason) for e in runner.history if isinstance(e, ev.TrialFinished)]
    assert states[0] == ("FAIL", "RuntimeError: generation broke") and states[1][0] == "COMPLETE"
