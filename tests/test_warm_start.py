"""Warm starts (sd_optim/run/warm.py): parameter sets given by name, and another study's result
mapped onto a finer search space by the keys its parameters cover (coarse to fine)."""

import optuna
import pytest
from test_runner import make_config, run

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError
from sd_optim.run.study import CONFIRM_ATTR
from sd_optim.run.warm import START_ATTR
from sd_optim.search.space import build_search_space, map_point

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(guide, **bounds):
    config = config_from_dict({"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}],
                               "scorers": ["image_stats"], "guide": {**guide, "bounds": bounds}})
    return build_search_space(config, "sd1-ldm")


BLOCKWISE = {"diffuser": ["all"], "clip_l": ["single"]}


def test_a_coarse_optimum_sets_every_block_it_covers():
    coarse = space({"diffuser": ["single"], "clip_l": ["single"]})
    fine = space(BLOCKWISE)
    point = map_point(coarse, {"diffuser.all.alpha": 0.3, "clip_l.all.alpha": 0.7}, fine)
    assert len(point) == len(fine.params) > 20
    assert point["clip_l.all.alpha"] == 0.7 and point["diffuser.IN04.alpha"] == 0.3 and point["diffuser.OUT11.alpha"] == 0.3


def test_groups_map_to_their_blocks_and_blocks_to_a_group_by_the_keys_they_share():
    groups = space({"diffuser": [{"strategy": "group", "groups": {"in": ["IN*"], "rest": ["BASE", "M00", "OUT*"]}}]})
    fine = space({"diffuser": ["all"]})
    point = map_point(groups, {"diffuser.in.alpha": 0.2, "diffuser.rest.alpha": 0.8}, fine)
    assert point["diffuser.IN07.alpha"] == 0.2 and point["diffuser.OUT03.alpha"] == 0.8
    back = map_point(fine, {p.name: (0.0 if ".IN" in p.name else 1.0) for p in fine.params}, groups)
    assert back == {"diffuser.in.alpha": 0.0, "diffuser.rest.alpha": 1.0}
    # the coarse parameter covers input and output blocks: a key-weighted mean
    mixed = map_point(fine, {p.name: (0.0 if ".IN" in p.name else 1.0) for p in fine.params},
                      space({"diffuser": ["single"]}))
    assert 0.0 < mixed["diffuser.all.alpha"] < 1.0


def test_values_are_brought_inside_the_finer_ranges_and_onto_their_steps():
    coarse = space({"diffuser": ["single"]})
    fine = space({"diffuser": ["all"]}, alpha={"low": 0.2, "high": 0.6, "step": 0.1})
    assert map_point(coarse, {"diffuser.all.alpha": 0.9}, fine)["diffuser.IN00.alpha"] == 0.6
    assert map_point(coarse, {"diffuser.all.alpha": 0.33}, fine)["diffuser.IN00.alpha"] == pytest.approx(0.3)
    assert map_point(coarse, {"diffuser.all.alpha": 0.3}, space({"clip_l": ["single"]})) == {}


def test_a_fine_study_starts_at_the_coarse_studys_result_then_the_given_values(sd1_host, tiny_sd1_paths,
                                                                               tiny_sd1_config_dir, tmp_path):
    coarse = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, optimizer={"study": "coarse", "trials": 3})
    run(coarse, sd1_host)
    best = optuna.load_study(study_name="coarse", storage=f"sqlite:///{tmp_path / 'coarse' / 'study.db'}").best_trial
    fine = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, guide=BLOCKWISE,
                       optimizer={"study": "fine", "trials": 3, "baseline": ["midpoint"],
                                  "start_from_study": "coarse",
                                  "start_from": [{"diffuser.IN04.alpha": 0.9, "clip_l.all.alpha": 0.1}]})
    final = run(fine, sd1_host)
    assert final.completed == 3
    trials = optuna.load_study(study_name="fine", storage=f"sqlite:///{tmp_path / 'fine' / 'study.db'}").trials
    assert trials[0].user_attrs["sd_optim.baseline"] == "midpoint"  # the baselines first
    assert trials[1].user_attrs[START_ATTR] == "start_from[0]"
    assert trials[1].params["diffuser.IN04.alpha"] == 0.9 and trials[1].params["clip_l.all.alpha"] == 0.1
    assert len(trials[1].params) == len(trials[0].params)  # the rest drawn by the sampler
    assert trials[2].user_attrs[START_ATTR] == f"study coarse trial {best.number}"
    assert trials[2].params["clip_l.all.alpha"] == best.params["clip_l.all.alpha"]
    assert {v for k, v in trials[2].params.items() if k.startswith("diffuser.")} == {best.params["diffuser.all.alpha"]}


def test_the_confirmed_winner_is_the_result_a_study_starts_from(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                                tmp_path):
    run(make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                    optimizer={"study": "coarse", "trials": 3, "confirm_top": 3}), sd1_host)
    coarse = optuna.load_study(study_name="coarse", storage=f"sqlite:///{tmp_path / 'coarse' / 'study.db'}")
    winner = coarse.user_attrs[CONFIRM_ATTR]["winner"]
    run(make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, guide=BLOCKWISE,
                    optimizer={"study": "fine", "trials": 1, "start_from_study": "coarse"}), sd1_host)
    first = optuna.load_study(study_name="fine", storage=f"sqlite:///{tmp_path / 'fine' / 'study.db'}").trials[0]
    assert first.user_attrs[START_ATTR] == f"study coarse trial {winner}"


def test_warm_starts_that_do_not_fit_name_the_field_and_nothing_is_created(sd1_host, tiny_sd1_paths,
                                                                           tiny_sd1_config_dir, tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, guide=BLOCKWISE,
                         optimizer={"study": "fine", "start_from_study": "nope",
                                    "start_from": [{"diffuser.IN4.alpha": 0.5}, {"clip_l.all.alpha": 1.5},
                                                   {"clip_l.all.alpha": "high"}]})
    with pytest.raises(ConfigError) as e:
        run(config, sd1_host)
    fields = [p.field for p in e.value.problems]
    assert fields == ["optimizer.start_from[0].diffuser.IN4.alpha", "optimizer.start_from[1].clip_l.all.alpha",
                      "optimizer.start_from[2].clip_l.all.alpha", "optimizer.start_from_study"]
    messages = [p.message for p in e.value.problems]
    assert "did you mean 'diffuser.IN04.alpha'?" in messages[0]
    assert messages[1:3] == ["must be within [0.0, 1.0]", "must be a number"]
    assert messages[3].startswith("no study named 'nope'")
    assert not (tmp_path / "fine").exists()
    with pytest.raises(ConfigError, match=r"optimizer.start_from\[0\]: must be a mapping"):
        make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, optimizer={"start_from": [0.5]})


# --- coarse to fine in one run (optimizer.coarse_trials) ---------------------------------------

def coarse_run_config(paths, config_dir, out, **optimizer):
    return make_config(paths, config_dir, out, guide={**BLOCKWISE, "bounds": {"alpha": {"low": 0.1, "high": 0.9},
                                                                              "diffuser.IN04.alpha": {"high": 0.8}}},
                       optimizer={"trials": 6, "coarse_trials": 3, "study": "ctf", "baseline": ["midpoint"],
                                  "confirm_top": 2, **optimizer},
                       after_run={"save_best": True})


def test_coarse_trials_come_first_in_a_study_of_their_own_and_the_rest_start_from_their_best(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, capsys):
    from sd_optim.cli import _Progress
    from sd_optim.run import events as ev
    from sd_optim.run.runner import Runner, RunOptions, run_to_end

    config = coarse_run_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path)
    events, runner = [], Runner(config, sd1_host, RunOptions())
    seen_states = []
    runner.listeners.append(lambda e: seen_states.append(runner.state.study.study_name) if isinstance(
        e, ev.TrialFinished) and runner.state is not None else None)
    done = run_to_end(runner, events.append)
    kinds = [type(e).__name__ for e in events if not isinstance(e, (ev.ImageScored, ev.TrialMerged))]
    assert kinds.count("RunStarted") == 2 and kinds.index("CoarseFinished") < kinds.index("RunStarted", 1)
    coarse_end = next(e for e in events if isinstance(e, ev.CoarseFinished))
    assert coarse_end.study == "ctf-coarse" and coarse_end.trials == 3 and coarse_end.reason == "completed"
    assert done.study == "ctf" and done.trials == 3 and done.coarse_study == "ctf-coarse"
    assert seen_states == ["ctf-coarse"] * 3 + ["ctf"] * 3  # the tab's table shows the study running

    coarse = optuna.load_study(study_name="ctf-coarse", storage=f"sqlite:///{tmp_path / 'ctf-coarse' / 'study.db'}")
    fine = optuna.load_study(study_name="ctf", storage=f"sqlite:///{tmp_path / 'ctf' / 'study.db'}")
    assert sorted(coarse.trials[0].params) == ["clip_l.all.alpha", "diffuser.all.alpha"]  # one value a component
    assert coarse.trials[0].user_attrs.get("sd_optim.baseline") == "midpoint"
    assert len(fine.trials[0].params) > 20 and fine.trials[0].user_attrs.get("sd_optim.baseline") == "midpoint"
    best = coarse.best_trial
    assert fine.trials[1].user_attrs[START_ATTR] == f"study ctf-coarse trial {best.number}"
    assert fine.trials[1].params["diffuser.OUT11.alpha"] == pytest.approx(best.params["diffuser.all.alpha"])
    assert CONFIRM_ATTR not in coarse.user_attrs and CONFIRM_ATTR in fine.user_attrs  # confirmed once, at the end
    assert done.saved_checkpoint and "ctf-coarse" not in done.saved_checkpoint  # saved once, the fine study's best
    # each stage's config.yaml is what it ran: the fine one loads again and starts from the coarse study
    from sd_optim.config import load_config

    saved = load_config(tmp_path / "ctf" / "config.yaml").optimizer
    assert (saved.trials, saved.coarse_trials, saved.start_from_study) == (3, 0, "ctf-coarse")
    assert load_config(tmp_path / "ctf-coarse" / "config.yaml").optimizer.trials == 3

    progress = _Progress(enabled=True)  # the CLI closes the coarse stage's bar and says where it ended
    for e in events:
        if not isinstance(e, ev.ImageScored):
            progress(e)
    assert f"coarse stage ctf-coarse (completed): best trial {best.number} = " in capsys.readouterr().err


def test_a_stop_in_the_coarse_stage_ends_the_run_there(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    from sd_optim.run import events as ev
    from sd_optim.run.runner import Runner, RunOptions, run_to_end

    config = coarse_run_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, confirm_top=0)
    runner = Runner(config, sd1_host, RunOptions())
    runner.listeners.append(lambda e: runner.control.stop() if isinstance(e, ev.TrialFinished) else None)
    done = run_to_end(runner)
    assert done.study == "ctf-coarse" and done.reason == "stopped" and done.coarse_study == ""
    assert not (tmp_path / "ctf").exists()  # the fine study never started


def test_coarse_trials_that_do_not_fit_name_the_field(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    from sd_optim.run.runner import Runner, RunOptions, run_to_end

    base = {"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}], "scorers": ["image_stats"]}
    for optimizer, field, words in [
        ({"trials": 5, "coarse_trials": 5}, "optimizer.coarse_trials", "fewer than optimizer.trials (5)"),
        ({"coarse_trials": 2, "start_from_study": "x"}, "optimizer.start_from_study", "leave it empty"),
        ({"coarse_trials": -1}, "optimizer.coarse_trials", ">= 0"),
    ]:
        with pytest.raises(ConfigError) as e:
            config_from_dict({**base, "optimizer": optimizer})
        assert any(p.field == field and words in p.message for p in e.value.problems), e.value.problems
    with pytest.raises(ConfigError, match="merge mode"):
        config_from_dict({**base, "mode": "recipe", "recipe": {"path": "r.mecha"}, "optimizer": {"coarse_trials": 2}})
    config = coarse_run_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path)  # --trials 3: none left for the rest
    with pytest.raises(ConfigError, match=r"optimizer.coarse_trials: must be fewer than the run's trials \(3\)"):
        run_to_end(Runner(config, sd1_host, RunOptions(trials=3)))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    run_to_end(Runner(config, sd1_host, RunOptions()))  # a study of that name exists now: refused before the coarse
    with pytest.raises(ConfigError, match="'ctf' already exists"):
        run_to_end(Runner(config, sd1_host, RunOptions()))
