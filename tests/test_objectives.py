"""Several objectives (``scoring.objectives``): each a group of scorers, optimized together by
Optuna's multi-objective samplers; the result is a Pareto front to pick from, with a balanced pick
(the highest mean of the objectives) for best.mecha, keep-best and save-best."""

import optuna
import pytest
from test_runner import assert_original, make_config, read_rows

from sd_optim.cli import _print_result
from sd_optim.config import config_from_dict
from sd_optim.demo import render_references
from sd_optim.errors import ConfigError, StudyMismatchError
from sd_optim.run import events as ev
from sd_optim.run.exporting import export_trial
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.run.study import best_trial, objective_names, pareto_front, trial_value
from sd_optim.scoring import objective_values
from sd_optim.search.planning import make_planner
from sd_optim.tiny_models import TINY_SIZE
from sd_optim.ui import catalog as cat
from sd_optim.ui import form as fm
from sd_optim.ui import views
from sd_optim.ui.plots import study_plots

optuna.logging.set_verbosity(optuna.logging.WARNING)

SETS = [{"name": name, "prompt": prompt, "seed": seed, "steps": 2, "cfg_scale": 5, "sampler": "Euler",
         "width": TINY_SIZE, "height": TINY_SIZE}
        for name, prompt, seed in (("fox", "a red fox", 3), ("house", "a house by a lake", 7))]
OBJECTIVES = {"likeness": ["reference"], "clean": ["low_noise", "image_stats"]}


@pytest.fixture(scope="module")
def references(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("references")
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, folder / "unused", payloads=SETS)
    render_references(config, sd1_host, {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9}, folder)
    return folder


def objectives_config(paths, config_dir, out, references, objectives=None, **optimizer):
    return make_config(paths, config_dir, out, payloads=SETS,
                       scorers=[{"name": "reference", "options": {"folder": str(references)}},
                                "low_noise", {"name": "image_stats", "weight": 2}],
                       scoring={"objectives": OBJECTIVES if objectives is None else objectives},
                       optimizer={"sampler": "random", "trials": 8, "seed": 0, "study": "multi", **optimizer})


def dominated(a, b) -> bool:
    """``a`` beaten by ``b``: no worse on any objective, better on one."""
    return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))


def test_a_run_with_two_objectives_gives_a_pareto_front_and_a_balanced_pick(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references):
    config = objectives_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references)
    events = []
    done = run_to_end(Runner(config, sd1_host, RunOptions()), events.append)
    finished = {e.number: e for e in events if isinstance(e, ev.TrialFinished)}
    assert done.completed == 8 and done.reason == "completed"
    study = optuna.load_study(study_name=done.study, storage=f"sqlite:///{tmp_path / 'multi' / 'study.db'}")
    assert len(study.directions) == 2 and objective_names(study) == ["likeness", "clean"]
    for t in study.trials:  # told each objective's value; the event's value is their mean
        f = finished[t.number]
        assert list(f.objectives) == ["likeness", "clean"]
        assert t.values == pytest.approx(list(f.objectives.values()))
        assert f.value == pytest.approx(sum(t.values) / 2) == pytest.approx(trial_value(t))
        # each objective is its own scorers' combination (these scorers' scores are 0-1 already)
        assert objective_values(f.per_scorer, OBJECTIVES, {"reference": 1, "low_noise": 1, "image_stats": 2},
                                {"fox": 1, "house": 1}, "arithmetic", "arithmetic") == pytest.approx(f.objectives)

    values = {t.number: t.values for t in study.trials}
    front = {n for n, v in values.items() if not any(dominated(v, w) for m, w in values.items() if m != n)}
    assert {p["trial"] for p in done.pareto} == front == {t.number for t in pareto_front(study)}
    for p in done.pareto:
        assert p["objectives"] == pytest.approx(dict(zip(["likeness", "clean"], values[p["trial"]])))
    pick = max(values, key=lambda n: sum(values[n]))
    assert done.best_trial == pick == best_trial(study).number and pick in front
    assert done.best_value == pytest.approx(sum(values[pick]) / 2)
    planner = make_planner(config, "sd1-ldm")  # best.mecha is the balanced pick's recipe
    assert (tmp_path / "multi" / "best.mecha").read_text(encoding="utf-8") == planner.recipe_text(
        study.trials[pick].params)
    rows = {r["number"]: r for r in read_rows(done.run_dir) if r.get("kind") == "trial"}
    assert rows[pick]["objectives"] == pytest.approx(finished[pick].objectives)
    assert_original(sd1_host, tiny_sd1_paths[0])

    # the tab: the front's table with the pick marked, each trial's objectives, the Pareto plot
    text = views.best_markdown(study)
    assert f"Pareto front: {len(front)} trial" in text and f"| {pick} ✓ |" in text
    assert "| trial | likeness | clean | mean |" in text
    row = next(r for r in views.trial_rows(study) if r[0] == pick)
    assert row[2] == pytest.approx(sum(values[pick]) / 2, abs=1e-6) and row[4].startswith("likeness ")
    plots = study_plots(study, kind="matplotlib")
    assert plots["pareto"] is not None and plots["history"] is not None and plots["intermediate"] is None

    # the CLI: the front to pick from, and any member exported by number
    other = min(front - {pick}) if len(front) > 1 else pick
    out = export_trial(tmp_path, "multi", trial=other, out=tmp_path / "other.mecha")
    assert out.read_text(encoding="utf-8") == planner.recipe_text(study.trials[other].params)
    assert cat.study_choices(str(tmp_path)) == ["multi (8 trials, 2 objectives)"]


def test_the_cli_prints_the_front_to_pick_from(capsys):
    result = {"study": "multi", "trials": 4, "reason": "completed", "best_trial": 2, "best_value": 0.6,
              "best_params": {"a": 0.5}, "best_recipe": "runs/multi/best.mecha", "run_dir": "runs/multi", "pareto": [
                  {"trial": 2, "objectives": {"likeness": 0.7, "clean": 0.5}, "value": 0.6},
                  {"trial": 3, "objectives": {"likeness": 0.4, "clean": 0.75}, "value": 0.575}]}
    _print_result(result, json_out=False)
    out = capsys.readouterr().out
    assert "Pareto front (2 trials" in out and "export multi --trial N --out FILE" in out
    assert out.index("trial 2: likeness 0.7000, clean 0.5000 (mean 0.6000)") < out.index("trial 3: likeness")


def test_a_resume_keeps_the_objectives_and_a_single_value_config_is_refused(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references):
    config = objectives_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, references, trials=2)
    run_to_end(Runner(config, sd1_host, RunOptions()))
    done = run_to_end(Runner(config, sd1_host, RunOptions(resume="multi", trials=1)))
    assert done.completed == 1 and len(done.pareto) >= 1
    single = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, payloads=SETS,
                         scorers=config.to_dict()["scorers"], optimizer={"sampler": "random", "study": "multi"})
    with pytest.raises(StudyMismatchError) as e:
        run_to_end(Runner(single, sd1_host, RunOptions(resume="multi")))
    assert "objectives" in str(e.value)


def test_a_row_with_objectives_is_written_back_with_them_on_a_resume():
    from sd_optim.run.recorder import _row_trial

    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    row = {"kind": "trial", "number": 0, "state": "COMPLETE", "value": 0.6, "params": {"x": 0.3},
           "objectives": {"likeness": 0.7, "clean": 0.5}}
    t = _row_trial(row, dist)
    assert t.values == [0.7, 0.5]


def base(**scoring_and_more):
    data = {"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}],
            "scorers": ["image_stats", "low_noise", "clip_score"],
            "scoring": {"objectives": {"looks": ["image_stats", "low_noise"], "adherence": "clip_score"}}}
    for key, value in scoring_and_more.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def problems(data) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    return {p.field: p.message for p in e.value.problems}


def test_objectives_are_read_with_a_name_per_group_of_scorers():
    cfg = config_from_dict(base())
    assert cfg.scoring.objectives == {"looks": ["image_stats", "low_noise"], "adherence": ["clip_score"]}
    assert cfg.to_dict()["scoring"]["objectives"] == cfg.scoring.objectives
    assert config_from_dict({**base(), "scoring": {}}).scoring.objectives == {}


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"scoring": {"objectives": {"looks": ["image_stats", "low_noise", "clip_score"]}}}, "scoring.objectives",
     "two or more"),
    ({"scoring": {"objectives": {"looks": ["image_stats"], "adherence": ["clip_scor"]}}},
     "scoring.objectives.adherence[0]", "did you mean 'clip_score'"),
    ({"scoring": {"objectives": {"looks": ["image_stats"], "adherence": ["clip_score"]}}}, "scoring.objectives",
     "belong to none"),
    ({"scoring": {"objectives": {"looks": [], "adherence": ["clip_score", "image_stats", "low_noise"]}}},
     "scoring.objectives.looks", "names no scorer"),
    ({"scoring": {"objectives": {"a b": ["image_stats", "low_noise"], "c": ["clip_score"]}}}, "scoring.objectives",
     "letters, digits"),
    ({"scoring": {"objectives": {"looks": [1], "adherence": ["clip_score"]}}}, "scoring.objectives.looks",
     "list of strings"),
    ({"optimizer": {"pruner": "median"}}, "optimizer.pruner", "cannot prune"),
    ({"optimizer": {"confirm_top": 3}}, "optimizer.confirm_top", "no single best"),
    ({"optimizer": {"sampler": "cmaes"}}, "optimizer.sampler", "CMA-ES optimizes one objective"),
    ({"scorers": ["image_stats", {"name": "low_noise", "weight": 0}, {"name": "clip_score", "weight": 0}],
      "scoring": {"objectives": {"looks": ["low_noise"], "adherence": ["clip_score", "image_stats"]}}},
     "scoring.objectives.looks", "weight > 0"),
    ({"payloads": [{"prompt": "x", "scorers": ["image_stats", "low_noise"]}]}, "scoring.objectives.adherence",
     "no prompt set is scored"),
])
def test_bad_objectives_are_refused_naming_the_field(change, field, words):
    found = problems(base(**change))
    assert field in found and words in found[field], found


def test_the_tabs_objectives_box_is_one_name_and_its_scorers_per_line():
    assert fm.objectives_data("looks: image_stats, low_noise\n\n adherence : clip_score\n") == {
        "looks": ["image_stats", "low_noise"], "adherence": ["clip_score"]}
    assert fm.objectives_data("") == {} and fm.objectives_data("looks") == {"looks": []}
    form = fm.data_to_form(base())
    assert form["objectives"] == "looks: image_stats, low_noise\nadherence: clip_score"
    assert fm.form_to_data(form)["scoring"]["objectives"] == {"looks": ["image_stats", "low_noise"],
                                                             "adherence": ["clip_score"]}


def test_workers_of_a_shared_study_tell_every_objective(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                                                        references):
    """A shared study is created with the objectives (by its first worker) and every worker's trials
    are told each one's value through the feed; early stopping counts the mean."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = objectives_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", references, trials=3,
                               storage=storage, study="shared", early_stopping={"patience": 5})
    first = run_to_end(Runner(config, sd1_host, RunOptions(join=True, trials=2)))
    second = run_to_end(Runner(config, sd1_host, RunOptions(join=True)))
    assert (first.trials, second.trials) == (2, 1)
    study = optuna.load_study(study_name="shared", storage=storage)
    assert objective_names(study) == ["likeness", "clean"]
    assert [len(t.values) for t in study.trials] == [2, 2, 2]
    assert second.best_trial == best_trial(study).number and second.pareto
