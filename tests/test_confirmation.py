"""The confirmation stage (``optimizer.confirm_top``): at the end of a run the best trials are
rendered again on fresh seeds and the winner is chosen on both values."""

import optuna
import pytest
from test_runner import assert_original, make_config, read_rows

from sd_optim.errors import ConfigError
from sd_optim.run import events as ev
from sd_optim.run.exporting import trial_recipe
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.run.study import CONFIRM_ATTR, chosen_trial
from sd_optim.search.recipes import recipe_text
from sd_optim.ui import views
from sd_optim.ui.runs import _describe

optuna.logging.set_verbosity(optuna.logging.WARNING)

SETS = [{"name": "fox", "prompt": "a red fox", "seed": 3, "steps": 2, "cfg_scale": 5, "sampler": "Euler",
         "width": 64, "height": 64, "batch_size": 2},
        {"name": "house", "prompt": "a house by a lake", "seed": 7, "steps": 2, "cfg_scale": 5, "sampler": "Euler",
         "width": 64, "height": 64}]


def confirmed_run(host, paths, config_dir, out, listener=None, **optimizer):
    """A run of the tiny models with the confirmation stage; ``listener(runner, event)`` sees each
    event as it happens (to stop the run, or to fail a write)."""
    config = make_config(paths, config_dir, out, payloads=SETS,
                         optimizer={"trials": 6, "confirm_top": 3, "study": "c", **optimizer})
    runner = Runner(config, host, RunOptions())
    if listener is not None:
        runner.listeners.append(lambda e: listener(runner, e))
    events = []
    final = run_to_end(runner, events.append)
    return config, final, events


def test_the_best_trials_are_rendered_again_on_fresh_seeds_and_the_winner_chosen_on_both(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    config, final, events = confirmed_run(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path)
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c' / 'study.db'}")
    top = sorted(study.trials, key=lambda t: -t.value)[:3]
    (started,) = [e for e in events if isinstance(e, ev.ConfirmationStarted)]
    assert started.trials == [t.number for t in top]
    confirmed = [e for e in events if isinstance(e, ev.TrialConfirmed)]
    assert [c.number for c in confirmed] == started.trials
    for c, t in zip(confirmed, top):
        assert c.value == t.value and c.combined == pytest.approx((c.value + c.fresh_value) / 2)
        images = [e for e in events if isinstance(e, ev.ImageScored) and e.stage == "confirm" and e.trial == c.number]
        # each prompt set's next seeds: fox 3, 4 in the trials -> 5, 6; house 7 -> 8
        assert sorted((e.payload, e.seed) for e in images) == [("fox", 5), ("fox", 6), ("house", 8)]
    assert any(c.fresh_value != c.value for c in confirmed)  # other seeds, other images
    winner = max(confirmed, key=lambda c: c.combined)
    (done,) = [e for e in events if isinstance(e, ev.ConfirmationFinished)]
    assert (done.winner, done.combined, done.raw_best) == (winner.number, winner.combined, top[0].number)
    assert (final.confirmed_trial, final.confirmed_value) == (winner.number, winner.combined)
    assert final.best_trial == top[0].number  # the study's best stays the highest value
    attr = study.user_attrs[CONFIRM_ATTR]
    assert attr["winner"] == winner.number and attr["trials"][str(winner.number)]["fresh_value"] == winner.fresh_value
    assert chosen_trial(study).number == winner.number
    params = study.trials[winner.number].params
    assert (tmp_path / "c" / "best.mecha").read_text() == recipe_text(trial_recipe(study, config, None)) \
        == recipe_text(trial_recipe(study, config, winner.number))
    rows = [r for r in read_rows(final.run_dir) if r.get("kind") == "confirm"]
    assert [r["number"] for r in rows] == started.trials
    assert all(len(r["images"]) == 3 and r["images"][0]["path"].startswith("images/confirm/") for r in rows)
    assert (tmp_path / "c" / rows[0]["images"][0]["path"]).is_file()
    assert params == dict(chosen_trial(study).params)
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_the_tab_and_the_status_show_both_numbers(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    _, final, _ = confirmed_run(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, confirm_top=2)
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c' / 'study.db'}")
    text = views.best_markdown(study)
    assert "| trial | value | on fresh seeds | both |" in text and f"| {final.confirmed_trial} ✓ |" in text
    assert f"Parameters of trial {final.confirmed_trial}:" in text
    status = _describe({"state": "finished", "study": "c", "reason": "completed", "trials_done": 6,
                        "best_trial": final.best_trial, "best_value": final.best_value,
                        "confirmed_trial": final.confirmed_trial, "confirmed_value": final.confirmed_value})
    assert f"on fresh seeds too: trial #{final.confirmed_trial}" in status
    shown = views.status_markdown({"state": "running", "trials_done": 6, "trials_total": 6, "confirming": (1, 2)})
    assert "confirming the best 2 on fresh seeds (1 of 2 done)" in shown


def stop_at(kind):
    return lambda runner, e: runner.control.stop("stopped") if isinstance(e, kind) else None


def test_a_stopped_run_confirms_nothing(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    _, final, events = confirmed_run(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, stop_at(ev.TrialFinished))
    assert final.reason == "stopped" and final.confirmed_trial is None
    assert not [e for e in events if isinstance(e, (ev.ConfirmationStarted, ev.TrialConfirmed))]


def test_a_stop_while_confirming_ends_the_stage_without_a_winner(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                                 tmp_path):
    _, final, events = confirmed_run(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                                     stop_at(ev.TrialConfirmed), trials=4)
    assert final.reason == "stopped (while confirming the best trials)" and final.confirmed_trial is None
    (done,) = [e for e in events if isinstance(e, ev.ConfirmationFinished)]
    assert done.winner is None and done.note == "stopped"
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c' / 'study.db'}")
    assert CONFIRM_ATTR not in study.user_attrs and chosen_trial(study).number == study.best_trial.number
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_a_failure_while_confirming_keeps_the_run_and_its_trials(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                                 tmp_path):
    def break_confirmation(runner, event):
        if isinstance(event, ev.ImageScored) and event.stage == "confirm":
            raise OSError("No space left on device")

    _, final, events = confirmed_run(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, break_confirmation,
                                     trials=3, confirm_top=2)
    assert final.reason == "completed" and final.completed == 3 and final.confirmed_trial is None
    (done,) = [e for e in events if isinstance(e, ev.ConfirmationFinished)]
    assert done.winner is None and done.note.startswith("failed: RecordingFailed") and "No space left" in done.note
    assert (tmp_path / "c" / "best.mecha").exists()
    assert_original(sd1_host, tiny_sd1_paths[0])


@pytest.mark.parametrize("value", [-1, 21, "3"])
def test_confirm_top_is_checked(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, value):
    with pytest.raises(ConfigError, match="optimizer.confirm_top"):
        make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, optimizer={"confirm_top": value})
