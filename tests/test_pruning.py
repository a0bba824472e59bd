"""Pruning (``optimizer.pruner``): a trial's running score is reported after each prompt set, and
a trial clearly worse than the others at that point stops before its remaining sets generate."""

import statistics

import optuna
import pytest
from test_runner import assert_original, make_config, read_rows

from sd_optim.demo import render_references
from sd_optim.errors import ConfigError
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.run.study import make_pruner
from sd_optim.tiny_models import TINY_SIZE

optuna.logging.set_verbosity(optuna.logging.WARNING)

SETS = [{"name": name, "prompt": prompt, "seed": seed, "steps": 2, "cfg_scale": 5, "sampler": "Euler",
         "width": TINY_SIZE, "height": TINY_SIZE}
        for name, prompt, seed in (("fox", "a red fox", 3), ("house", "a house by a lake", 7),
                                   ("tree", "a tall tree", 11))]


@pytest.fixture(scope="module")
def references(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path_factory):
    """The images of one merge (alpha 0.9 for both parameters): the ``reference`` scorer's
    target, so that a trial's score says how far its alphas are from 0.9."""
    folder = tmp_path_factory.mktemp("references")
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, folder / "unused", payloads=SETS)
    render_references(config, sd1_host, {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9}, folder)
    return folder


def pruned_config(paths, config_dir, out, references, **optimizer):
    return make_config(paths, config_dir, out, payloads=SETS,
                       scorers=[{"name": "reference", "options": {"folder": str(references)}}],
                       optimizer={"sampler": "random", "trials": 10, "seed": 0, "study": "pruned",
                                  "pruner": "median", "pruner_options": {"n_startup_trials": 3},
                                  **optimizer})


def test_a_clearly_worse_trial_stops_early_and_is_recorded_as_pruned(sd1_host, tiny_sd1_paths,
                                                                       tiny_sd1_config_dir, tmp_path, references):
    config = pruned_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references)
    events = []
    done = run_to_end(Runner(config, sd1_host, RunOptions()), events.append)
    finished = [e for e in events if isinstance(e, ev.TrialFinished)]
    pruned = [f for f in finished if f.state == "PRUNED"]
    assert done.trials == 10 and done.pruned == len(pruned) >= 1 and done.completed == 10 - len(pruned)
    study = optuna.load_study(study_name=done.study, storage=f"sqlite:///{tmp_path / 'pruned' / 'study.db'}")
    rows = {r["number"]: r for r in read_rows(done.run_dir) if r.get("kind") == "trial"}
    for f in pruned:
        # below the median of the earlier trials' running scores after the same prompt set
        step = max(f.intermediate)
        earlier = [t.intermediate_values[step] for t in study.trials[:f.number]
                   if step in t.intermediate_values and t.state == optuna.trial.TrialState.COMPLETE]
        assert f.value == f.intermediate[step] < statistics.median(earlier)
        assert f.reason.startswith(f"pruned after {step + 1} of 3 prompt sets")
        images = [e for e in events if isinstance(e, ev.ImageScored) and e.trial == f.number]
        assert {e.payload for e in images} == {s["name"] for s in SETS[:step + 1]}  # no image past it
        t = study.trials[f.number]
        assert t.state == optuna.trial.TrialState.PRUNED and t.value == pytest.approx(f.value)
        assert t.user_attrs["prune_reason"] == f.reason and t.intermediate_values == {
            k: pytest.approx(v) for k, v in f.intermediate.items()}
        assert rows[f.number]["state"] == "PRUNED" and len(rows[f.number]["images"]) == step + 1
    for f in finished:
        if f.state == "COMPLETE":  # a completed trial reported after every set
            assert sorted(study.trials[f.number].intermediate_values) == [0, 1, 2]
    assert study.best_trial.state == optuna.trial.TrialState.COMPLETE
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_a_pruned_trials_row_is_written_back_as_pruned_on_a_resume(sd1_host, tiny_sd1_paths,
                                                                     tiny_sd1_config_dir, tmp_path, references):
    """A resume writes into study.db the trials it lacks from the run folder's rows (a kill before
    they were written): a pruned one comes back pruned, with its value and running scores."""
    from sd_optim.run.recorder import _row_trial
    from sd_optim.search.planning import make_planner

    config = pruned_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references, trials=8)
    done = run_to_end(Runner(config, sd1_host, RunOptions()))
    assert done.pruned
    study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{tmp_path / 'pruned' / 'study.db'}")
    distributions = make_planner(config, sd1_host.model_config()).space.distributions()
    for row in read_rows(done.run_dir):
        if row.get("kind") != "trial":
            continue
        back, kept = _row_trial(row, distributions), study.trials[row["number"]]
        assert back.state == kept.state and back.value == pytest.approx(kept.value)
        assert back.intermediate_values == pytest.approx(kept.intermediate_values)
        assert back.user_attrs.get("prune_reason") == kept.user_attrs.get("prune_reason")


@pytest.mark.parametrize(("name", "options", "sets", "field"), [
    ("median", {}, 1, "optimizer.pruner"),
    ("median", {"n_startup_trails": 3}, 3, "optimizer.pruner_options.n_startup_trails"),
    ("percentile", {"percentile": 150.0}, 3, "optimizer.pruner_options"),
    ("halving", {"reduction_factor": "two"}, 3, "optimizer.pruner_options.reduction_factor"),
    ("none", {"n_startup_trials": 3}, 3, "optimizer.pruner_options"),
])
def test_pruner_settings_are_checked(name, options, sets, field):
    with pytest.raises(ConfigError) as e:
        make_pruner(name, options, sets)
    assert e.value.problems[0].startswith(field + ":"), e.value.problems


def test_every_pruner_is_made_and_none_is_off():
    assert make_pruner("none", {}, 1) is None
    assert isinstance(make_pruner("median", {"n_warmup_steps": 1}, 2), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("percentile", {}, 2), optuna.pruners.PercentilePruner)
    assert isinstance(make_pruner("halving", {}, 2), optuna.pruners.SuccessiveHalvingPruner)


def test_an_unknown_pruner_names_the_field_before_anything_runs(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    with pytest.raises(ConfigError, match="optimizer.pruner"):
        make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, optimizer={"pruner": "hyperband"})


def test_workers_of_a_shared_study_prune_against_every_workers_trials(sd1_host, tiny_sd1_paths,
                                                                      tiny_sd1_config_dir, tmp_path, references):
    """A worker reports its running scores into the shared database; the next worker's pruner
    compares against them (their trials are one study)."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = pruned_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", references,
                           trials=10, storage=storage, study="shared")
    first = run_to_end(Runner(config, sd1_host, RunOptions(join=True, trials=4)))
    second = run_to_end(Runner(config, sd1_host, RunOptions(join=True)))
    assert first.trials == 4 and second.trials == 6 and first.reason == second.reason == "completed"
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 10 and optuna.trial.TrialState.PRUNED in states[4:]
    assert second.pruned == states.count(optuna.trial.TrialState.PRUNED) - first.pruned
    for t in study.trials:
        assert t.intermediate_values and (t.state == optuna.trial.TrialState.COMPLETE) == (len(t.intermediate_values) == 3)
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.value == t.intermediate_values[max(t.intermediate_values)]
            assert t.user_attrs["prune_reason"].startswith("pruned after")
