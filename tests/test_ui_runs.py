"""What the tab drives, without a browser: a run started from the tab's controls on the standalone
host (live images with captions, status with ETA and time split, a fresh study name on a second
Start), the results actions on its trials (recipe, checkpoint, look again with the original
restored, keep loaded), and the set-up panels' catalog (architectures, methods, scorers, studies,
the parameter preview)."""

from __future__ import annotations

import re
import threading

import numpy as np
import optuna
import pytest
import safetensors.torch
import sd_mecha
from test_runner import assert_original

from sd_optim.errors import ConfigError
from sd_optim.tiny_models import TINY_SIZE
from sd_optim.ui import catalog as cat
from sd_optim.ui import form as fm
from sd_optim.ui import views
from sd_optim.ui.runs import Defaults, RunBusy, RunManager
from sd_optim.ui.tab import run_view

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def tab_form(tiny_sd1_paths, tiny_sd1_config_dir):
    """The set-up a user makes in the tab: two models, two prompt sets, one scorer."""
    return {
        **fm.FORM_DEFAULTS,
        "models": [str(tiny_sd1_paths[0]), str(tiny_sd1_paths[1])],
        "diffusers_config": str(tiny_sd1_config_dir), "device": "cpu",
        "strategies": [["diffuser", "single", "", "", "", "", ""], ["clip_l", "single", "", "", "", "", ""]],
        "payloads": [["fox", "a red fox", "", 3, 2, 5, "Euler", "Automatic", TINY_SIZE, TINY_SIZE, 2, 1, ""],
                     ["lake", "a lake", "", 4, 2, 5, "Euler", "Automatic", TINY_SIZE, TINY_SIZE, 1, 1, ""]],
        "scorers": [["image_stats", 1, ""]], "scorer_use": ["image_stats"],
        "sampler": "random", "trials": 3, "seed": 0,
    }


@pytest.fixture
def manager(sd1_host, tmp_path):
    m = RunManager(defaults=Defaults(output_dir=str(tmp_path / "runs")), host_for=lambda config: sd1_host)
    yield m
    m.shutdown()


def test_a_run_started_from_the_controls_streams_captioned_images_and_timings(manager, tab_form):
    seen = []
    manager.start(fm.form_to_data(tab_form), fresh_name=True)
    version = -1
    while manager.live:
        version = manager.wait_for_change(version, 5.0)
        seen.append(manager.status())
    status = manager.wait()
    live = manager.current
    assert status["state"] == "finished" and status["trials_done"] == 3
    assert status["study"] == "weighted_sum-" + "-".join(fm.form_to_data(tab_form)["models"][i]["name"]
                                                          for i in range(2))
    first_caption = next(c for _, c in live.images)  # the score first: a gallery cuts captions short
    assert first_caption.startswith("image_stats ") and first_caption.endswith(" · trial #2 · fox, image 0")
    assert len(live.images) == 3 and len(live.best_images) == 3  # 2 fox + 1 lake
    running = [s for s in seen if s["state"] == "running" and s["trials_done"] >= 1]
    assert running and running[-1]["eta_seconds"] is not None
    assert set(running[-1]["last_timings"]) == {"suggest", "merge", "generate", "score", "other"}
    shown = views.status_markdown(running[-1])  # a count, and trials by their study number
    assert "of 3 trials done" in shown and "last trial: merge" in shown and "Trial " not in shown
    rows = views.trial_rows(manager.run_state().study)
    assert [r[0] for r in rows] == [2, 1, 0] and all(r[1] == "COMPLETE" for r in rows)

    manager.start(fm.form_to_data(tab_form), fresh_name=True)  # Start pressed again: a new study
    assert manager.wait()["study"] == status["study"] + "-2"


def test_results_actions_on_a_finished_run(manager, tab_form, sd1_host, tiny_sd1_paths, tmp_path):
    manager.start(fm.form_to_data(tab_form), fresh_name=True)
    manager.wait()
    tools = manager.trial_tools()
    best = tools.best_number()
    recipe = tools.recipe_file(1)
    assert sd_mecha.deserialize_path(recipe) and recipe.name == "trial-00001.mecha"
    with pytest.raises(ConfigError, match=r"trial: no such completed trial .*got 7"):
        tools.recipe_file(7)

    looked = list(tools.look(best))
    assert [p for p, _ in looked] == ["fox", "fox", "lake"]
    assert np.array_equal(np.asarray(looked[0][1].image), np.asarray(manager.current.best_images[0][0]))
    assert_original(sd1_host, tiny_sd1_paths[0])  # looking again leaves the original loaded

    saved = tools.save_checkpoint(best, "chosen")
    assert saved.name == "chosen.safetensors" and "mecha_recipe" in safetensors.safe_open(
        str(saved), "pt").metadata()

    kept = tools.keep(best)
    assert sd1_host.kept_merge() == kept and kept.trial == best
    original = safetensors.torch.load_file(str(tiny_sd1_paths[0]))
    with sd1_host.open_slot() as slot:
        key = next(k for k in original if k.startswith("model.diffusion_model.") and k in slot)
        assert not np.array_equal(slot[key].numpy(), original[key].numpy())
    sd1_host.release_kept()  # and back to the original for the other tests
    assert sd1_host.kept_merge() is None
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_a_run_after_keep_loaded_starts_from_the_host_models_file(manager, tab_form, sd1_host, tiny_sd1_paths):
    manager.start(fm.form_to_data({**tab_form, "trials": 1}), fresh_name=True)
    manager.wait()
    with manager.trial_action("keeping a trial loaded") as tools:
        kept = tools.keep(tools.best_number())
    assert sd1_host.kept_merge() == kept
    manager.start(fm.form_to_data({**tab_form, "trials": 1}), fresh_name=True)
    status = manager.wait()
    assert status["state"] == "finished" and "kept_loaded" not in status
    assert sd1_host.kept_merge() is None  # no longer reported as loaded
    # the run's slot restored to the file's weights, not to the kept merge
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_results_actions_wait_for_a_live_run(manager, tab_form):
    gate = threading.Event()
    manager.start(fm.form_to_data({**tab_form, "trials": 50}), fresh_name=True)
    manager.current.runner.listeners.append(lambda e: gate.set())
    gate.wait(30)
    with pytest.raises(RunBusy):
        manager.trial_tools()
    manager.stop("stopped from the tab")
    assert manager.wait()["reason"] == "stopped from the tab"


def test_catalog_lists_checkpoints_with_their_architecture(tiny_sd1_paths, tiny_sdxl_paths):
    catalog = cat.ModelCatalog(folder=tiny_sd1_paths[0].parent)
    titles = catalog.titles()
    assert tiny_sd1_paths[0].name in titles and tiny_sdxl_paths[0].name in titles
    assert catalog.architecture(catalog.path_for(tiny_sd1_paths[0].name)) == "sd1-ldm"
    assert catalog.architecture(str(tiny_sdxl_paths[0])) == "sdxl-sgm"
    assert catalog.title_for(str(tiny_sd1_paths[1])) == tiny_sd1_paths[1].name
    assert catalog.path_for("/elsewhere/x.safetensors") == "/elsewhere/x.safetensors"


def test_preview_follows_the_guide_and_names_problems(tab_form):
    lines, problems = cat.preview(fm.form_to_data(tab_form), "sd1-ldm")
    assert problems == [] and [ln.split()[0] for ln in lines] == ["diffuser.all.alpha", "clip_l.all.alpha"]
    tab_form["strategies"][0][1] = "all"  # the user edits one strategy
    lines, _ = cat.preview(fm.form_to_data(tab_form), "sd1-ldm")
    assert len(lines) == 27 and lines[0].startswith("diffuser.BASE.alpha")  # 26 blocks + clip_l
    tab_form["strategies"][0][1] = "select"
    _, problems = cat.preview(fm.form_to_data(tab_form), "sd1-ldm")
    assert problems == ["guide.diffuser[0].patterns: select needs at least one pattern"]
    assert cat.preview(fm.form_to_data(tab_form), None)[1][0].startswith("models:")
    text = views.preview_markdown(*cat.preview(fm.form_to_data({**tab_form, "strategies": [
        ["clip_l", "single", "", "", "", "", ""]]}), "sd1-ldm"))
    assert text.startswith("**1 parameter to tune**")


def test_methods_scorers_and_studies_as_the_panels_show_them(manager, tab_form, tmp_path):
    rows, inputs = cat.method_rows("weighted_sum")
    assert rows == [["alpha", "float", 0.5]] and inputs == "models: a, b"
    assert cat.method_needs_base("add_difference") and not cat.method_needs_base("weighted_sum")
    assert cat.method_rows("weigthed_sum")[1].startswith("merge.method: unknown")
    status = cat.scorer_status([{"name": "image_stats"}, {"name": "reference", "options": {"folder": "nope"}},
                                {"name": "laion_aesthetic"}], str(tmp_path / "scorer-models"))
    assert status[0] == "image_stats: ready"
    assert status[1].startswith("reference: ") and "nope" in status[1]
    assert "laion_aesthetic" in status[2] and str(tmp_path / "scorer-models") in status[2]
    rows = [r[0] for r in cat.scorer_rows(str(tmp_path / "scorer-models"))]
    assert rows == sorted(rows) and {"image_stats", "laion_aesthetic", "manual", "reference"} <= set(rows)

    manager.start(fm.form_to_data(tab_form), fresh_name=True)
    study = manager.wait()["study"]
    choices = cat.study_choices(str(tmp_path / "runs"))
    assert len(choices) == 1 and choices[0].startswith(f"{study} (3 trials, best ")
    assert cat.study_of_choice(choices[0]) == study


def test_check_names_what_start_would_refuse_by_panel(tab_form, tmp_path):
    assert cat.check_setup(fm.form_to_data(tab_form), Defaults(output_dir=str(tmp_path)), "sd1-ldm") == []
    bad = {**tab_form, "models": [tab_form["models"][0], str(tmp_path / "gone.safetensors")],
           "scorers": [["reference", 1, f"folder: {tmp_path / 'no-refs'}"]], "scorer_use": ["reference"],
           "strategies": [["diffuser", "select", "", "", "", "", ""]]}
    problems = cat.check_setup(fm.form_to_data(bad), Defaults(output_dir=str(tmp_path)), "sd1-ldm")
    by_panel = fm.problems_by_panel(problems)
    assert by_panel["models"] == [f"models[1].path: no such file, got '{tmp_path / 'gone.safetensors'}'"]
    assert by_panel["guide"] == ["guide.diffuser[0].patterns: select needs at least one pattern"]
    assert by_panel["scorers"][0].startswith("scorers[0]: reference: the folder")


def test_a_refused_start_keeps_the_last_results_and_actions_hold_the_model(manager, tab_form):
    manager.start(fm.form_to_data(tab_form), fresh_name=True)
    first = manager.wait()
    assert first["current_trial"] is None  # no "trial 4 of 3" once the last one ended
    with pytest.raises(ConfigError, match="--resume: no study named 'nope'"):
        manager.start(fm.form_to_data(tab_form), resume="nope")
    assert manager.status()["study"] == first["study"] and manager.trial_tools().best_number() >= 0
    with manager.trial_action("looking at a trial again"):
        with pytest.raises(RunBusy, match="the model is busy \\(looking at a trial again\\)"):
            manager.start(fm.form_to_data(tab_form), fresh_name=True)
        with pytest.raises(RunBusy), manager.trial_action("keeping a trial loaded"):
            pass
    assert manager.busy == ""


def test_broken_files_are_named_not_crashed_on(tab_form, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    catalog = cat.ModelCatalog(folder=tmp_path)
    assert catalog.architecture(str(junk)).startswith("unreadable (junk.safetensors is not a safetensors file")
    assert catalog.architecture(str(short)).startswith("unreadable")
    problems = cat.check_setup(fm.form_to_data({**tab_form, "models": [tab_form["models"][0], str(junk)]}),
                               Defaults(output_dir=str(tmp_path)), "sd1-ldm")
    assert problems == [(f"models[1].path: junk.safetensors is not a safetensors file (bad header size), "
                         f"got {str(junk)!r}")]
    text = tmp_path / "not.mecha"
    text.write_text("not a recipe at all")
    recipe_form = {**tab_form, "mode": "recipe", "recipe_path": str(text)}
    assert cat.preview(fm.form_to_data(recipe_form), "sd1-ldm")[1][0].startswith(
        "recipe.path: not.mecha is not a valid .mecha recipe")


def test_check_names_sampler_and_scheduler_the_host_does_not_have(tab_form, tmp_path):
    from sd_optim.hosts.base import name_problems

    bad = {**tab_form, "payloads": [[*tab_form["payloads"][0][:6], "Euler bogus", "Nonsense",
                                     *tab_form["payloads"][0][8:]]]}
    problems = cat.check_setup(fm.form_to_data(bad), Defaults(output_dir=str(tmp_path)), "sd1-ldm",
                               lambda s, c: name_problems(s, c, ["Euler"], ["Automatic"]))
    assert problems == ["payloads[0].sampler: not a sampler of this host, got 'Euler bogus' (valid: Euler)",
                        "payloads[0].scheduler: not a scheduler of this host, got 'Nonsense' (valid: Automatic)"]


def test_pause_change_the_trial_limit_and_resume(manager, tab_form):
    paused = threading.Event()
    manager.start(fm.form_to_data({**tab_form, "trials": 50}), fresh_name=True)
    manager.current.runner.listeners.append(lambda e: paused.set() if e.kind == "RunPaused" else None)
    manager.pause()
    assert paused.wait(60) and manager.status()["paused"]
    lines = manager.adjust(fm.form_to_data({**tab_form, "trials": 4, "patience": 9}))
    assert lines[0].startswith("trials this run: 4") and lines[1].startswith("early stopping: after 9")
    manager.resume()
    status = manager.wait()
    assert status["reason"] == "completed" and status["trials_done"] == 4
    assert manager.current.runner.config.optimizer.early_stopping.patience == 9


def test_changes_that_make_trials_incomparable_are_refused_with_the_fork_way_out(manager, tab_form):
    gate = threading.Event()
    manager.start(fm.form_to_data({**tab_form, "trials": 50}), fresh_name=True)
    manager.current.runner.listeners.append(lambda e: gate.set())
    gate.wait(30)
    study = manager.status()["study"]
    other = {**tab_form, "payloads": [["fox", "a blue fox", *tab_form["payloads"][0][2:]]],
             "scorers": [["image_stats", 2, ""]], "scorer_use": ["image_stats"]}
    with pytest.raises(ConfigError) as e:
        manager.adjust(fm.form_to_data(other))
    assert [p.split(":")[0] for p in e.value.problems] == ["payloads", "scorers"]
    assert f"Start as fork of {study!r}" in e.value.problems[0]
    assert manager.current.runner.control.trial_limit == 50  # nothing applied
    manager.stop()
    manager.wait()
    with pytest.raises(ConfigError, match="no live run to adjust"):
        manager.adjust(fm.form_to_data(tab_form))


def test_stop_is_acknowledged_at_once_while_the_image_in_flight_finishes(manager, tab_form):
    busy, release = threading.Event(), threading.Event()

    def hold(event):  # the run thread is held inside a trial, as by a slow image
        if event.kind == "TrialStarted" and not release.is_set():
            busy.set()
            release.wait(60)

    manager.start(fm.form_to_data({**tab_form, "trials": 50}), fresh_name=True)
    manager.current.runner.listeners.append(hold)  # it may catch trial 0 or a later one
    try:
        assert busy.wait(60)
        status = manager.stop()
        assert status["state"] == "running" and status["stopping"] and status["eta_seconds"] is None
        assert "stopping after the current image…" in status["text"]
        shown = run_view.on_stop(lambda: manager)["status"]  # what the tab's Stop button shows at once
        assert "stopping after the current image…" in shown
        assert not re.search(r"trial #\d+ running", shown)  # the stop replaces the running trial
    finally:
        release.set()
    assert manager.wait()["reason"] == "stopped from the tab"


def test_start_as_join_works_on_a_shared_study_a_cli_worker_started(manager, tab_form, tmp_path):
    """A CLI worker starts the study; the tab joins it (Start as: join) and its trials table shows
    both workers' trials, with the worker column."""
    from sd_optim.cli import execute_run
    from sd_optim.config import config_from_dict

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    form = {**tab_form, "study": "team", "storage": storage, "trials": 4, "start_as": "join"}
    data = fm.form_to_data(form)
    cli_config = config_from_dict({**data, "output_dir": str(tmp_path / "cli-runs")})
    assert execute_run(cli_config, trials=2, join=True, host=manager.host_for(None))["trials"] == 2
    assert fm.start_options(form) == {"join": True}
    manager.start(data, fresh_name=True, **fm.start_options(form))
    status = manager.wait()
    assert status["state"] == "finished" and status["study"] == "team"
    rows = views.trial_rows(manager.run_state().study)
    assert [r[0] for r in rows] == [3, 2, 1, 0] and all(r[1] == "COMPLETE" for r in rows)
    assert [r[5].endswith("(cli)") for r in rows] == [False, False, True, True]
    assert rows[0][5].endswith("(diffusers)") and views.TRIAL_COLUMNS[5] == "worker"
