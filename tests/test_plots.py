"""The tab's study plots: real in-memory optuna studies, both figure kinds."""

from __future__ import annotations

import logging
import math
import warnings

import matplotlib.figure
import optuna
import plotly.graph_objects as go
import pytest

from sd_optim.ui import plots
from sd_optim.ui.plots import PLOT_NAMES, preferred_kind, study_plots

FIGURE_TYPES = {"plotly": go.Figure, "matplotlib": matplotlib.figure.Figure}
KINDS = list(FIGURE_TYPES)
FAIL = optuna.trial.TrialState.FAIL


def make_study(values: list[float | None], n_params: int = 2) -> optuna.Study:
    """One trial per value (None: a failed trial); the parameters are p0, p1, ... in [0, 1]."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for value in values:
        trial = study.ask()
        for i in range(n_params):
            trial.suggest_float(f"p{i}", 0.0, 1.0)
        if value is None:
            study.tell(trial, state=FAIL)
        else:
            study.tell(trial, value)
    return study


def pruned_study() -> optuna.Study:
    """A run with a pruner: each trial's score after each of three prompt sets; trial 2 pruned
    after the first."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for steps, pruned in (([0.5, 0.6, 0.7], False), ([0.6, 0.7, 0.8], False), ([0.1], True), ([0.7, 0.8, 0.9], False)):
        trial = study.ask()
        trial.suggest_float("p0", 0.0, 1.0)
        trial.suggest_float("p1", 0.0, 1.0)
        for step, value in enumerate(steps):
            trial.report(value, step)
        study.tell(trial, None if pruned else steps[-1], state=optuna.trial.TrialState.PRUNED if pruned else None)
    return study


def drawn(plots_: dict) -> set[str]:
    return {name for name, figure in plots_.items() if figure is not None}


def history_trials(figure, kind: str) -> list[int]:
    """The trial numbers plotted as objective values in a history plot."""
    if kind == "plotly":
        (trace,) = [t for t in figure.data if t.name == "Objective Value"]
        return list(trace.x)
    return [int(x) for x, _ in figure.axes[0].collections[0].get_offsets()]


@pytest.fixture(autouse=True)
def quiet_optuna():
    # optuna's own INFO lines ("A new study created") would hide the output these tests look at
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


@pytest.mark.parametrize("kind", KINDS)
def test_every_plot_is_a_figure_of_its_kind_once_trials_exist(kind):
    result = study_plots(make_study([0.1, 0.5, 0.3, 0.9, 0.2, 0.6]), kind=kind)
    assert list(result) == list(PLOT_NAMES)
    assert result.pop("intermediate") is None  # a run without a pruner reports no running scores
    assert result.pop("pareto") is None  # one objective: no front
    for name, figure in result.items():
        assert isinstance(figure, FIGURE_TYPES[kind]), name


@pytest.mark.parametrize("kind", KINDS)
def test_a_pruned_run_draws_the_running_scores_with_pruned_trials_ending_early(kind):
    """Trials report their score after each prompt set (steps 0, 1, 2); trial 2 was pruned
    after the first: it is in the running-score plot, not in the history."""
    result = study_plots(pruned_study(), kind=kind)
    assert isinstance(result["intermediate"], FIGURE_TYPES[kind])
    assert history_trials(result["history"], kind) == [0, 1, 3]
    if kind == "plotly":
        assert sorted(len(t.x) for t in result["intermediate"].data) == [1, 3, 3, 3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values", [[], [None, None]], ids=["no trials", "failed trials only"])
def test_nothing_is_drawn_without_a_completed_trial(kind, values):
    assert drawn(study_plots(make_study(values), kind=kind)) == set()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("values", "expected"), [
    ([0.5], {"history", "slice", "parallel"}),  # importances need two trials
    ([], set()),
    ([0.5, 0.5], {"history", "slice", "parallel"}),  # importances of tied values are meaningless
], ids=["one trial", "empty", "tied"])
def test_what_cannot_be_drawn_yet_is_none_and_no_warning_gets_out(kind, values, expected, caplog):
    study = make_study(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would raise here
        result = study_plots(study, kind=kind)
    assert drawn(result) == expected
    # neither optuna's logged warnings ("no completed trials", "too few trials for importances")
    # nor a plot that failed to draw
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("kind", KINDS)
def test_failed_trials_are_left_out(kind):
    study = make_study([0.3, None, 0.8, None, 0.5])
    result = study_plots(study, kind=kind)
    assert history_trials(result["history"], kind) == [0, 2, 4]
    assert result["importance"] is not None


@pytest.mark.parametrize(("values", "n_params"), [
    ([0.1, 0.9], 2),  # the least that gives importances
    ([0.5, 0.5, 0.5], 2),  # tied values: optuna gives equal importances
    ([0.1, 0.9, 0.4], 1),  # one parameter is always 100%
    ([0.1, math.inf], 2),  # optuna leaves out an infinite value: one trial left
], ids=["two trials", "tied values", "one parameter", "infinite value"])
def test_importances_need_two_differing_trials_and_two_parameters(values, n_params):
    expected = values == [0.1, 0.9]
    result = study_plots(make_study(values, n_params), kind="matplotlib")
    assert (result["importance"] is not None) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_a_study_of_infinite_values_draws_nothing(kind):
    assert drawn(study_plots(make_study([math.inf, -math.inf]), kind=kind)) == set()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("objectives", [2, 4])
def test_a_study_of_several_objectives_draws_its_pareto_front_and_the_mean(kind, objectives):
    """``scoring.objectives``: the front by the objectives' names (past what a plot has axes for,
    the first ones), the other plots by the mean of the objectives; no running scores."""
    study = optuna.create_study(directions=["maximize"] * objectives, sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"o{i}" for i in range(objectives)])
    for _ in range(6):
        trial = study.ask()
        xs = [trial.suggest_float(f"p{i}", 0, 1) for i in range(2)]
        study.tell(trial, [xs[0], xs[1], *[1 - xs[0]] * (objectives - 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = study_plots(study, kind=kind)
    assert drawn(result) == {"history", "importance", "slice", "parallel", "pareto"}
    if kind == "plotly" and objectives == 2:
        layout = result["pareto"].layout
        assert layout.xaxis.title.text == "o0" and layout.yaxis.title.text == "o1"
        assert "mean of the objectives" in str(result["history"].layout.yaxis.title.text)


def test_slice_shows_the_most_important_parameters_only():
    # p3 alone decides the value: it must be among the few the slice plot has room for
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        xs = [trial.suggest_float(f"p{i}", 0.0, 1.0) for i in range(8)]
        study.tell(trial, xs[3])
    figure = study_plots(study, kind="plotly")["slice"]
    layout = figure.layout.to_plotly_json()
    shown = [axis["title"]["text"] for name, axis in layout.items() if name.startswith("xaxis")]
    assert len(shown) == plots.MAX_PARAMS["slice"] and "p3" in shown


def test_plotly_figures_carry_no_typed_arrays():
    # plotly >= 6 sends numpy arrays as base64 typed arrays; the plotly.js inside gradio 3.41 and
    # 4.40 draws those as an empty plot (seen in Chromium)
    for name, figure in study_plots(pruned_study(), kind="plotly").items():
        if name == "pareto":  # one objective: none
            continue
        assert '"bdata"' not in figure.to_json(), name


def test_typed_arrays_are_sent_as_lists():
    import numpy as np

    x = np.arange(5.0)
    figure = plots._fit_plotly(go.Figure(go.Scatter(x=x, y=x ** 2, marker={"color": x})))
    assert '"bdata"' not in figure.to_json()
    assert list(figure.data[0].y) == [0.0, 1.0, 4.0, 9.0, 16.0]
    assert figure.layout.height == plots.HEIGHT_PX and figure.layout.width is None


def test_matplotlib_figures_leave_pyplot_and_the_host_style_as_they_were():
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    study = make_study([0.1, 0.5, 0.3])
    with plt.rc_context({"axes.facecolor": "#123456"}):  # the host's style
        for _ in range(3):
            result = study_plots(study, kind="matplotlib")
        assert plt.rcParams["axes.facecolor"] == "#123456"  # optuna switches to ggplot per plot
    assert plt.get_fignums() == open_figures  # closed in pyplot, as gr.Plot only needs savefig
    width, height = result["slice"].get_size_inches() * result["slice"].dpi
    assert (round(width), round(height)) == (plots.WIDTH_PX, plots.HEIGHT_PX)


def test_preferred_kind(monkeypatch):
    assert preferred_kind(3) == preferred_kind(4) == "plotly"  # plotly is installed here
    assert preferred_kind(5) == "matplotlib"  # not checked in a browser
    monkeypatch.setattr(optuna.visualization, "is_available", lambda: False)
    assert preferred_kind(4) == "matplotlib"


def test_an_unknown_kind_or_missing_plotly_is_refused(monkeypatch):
    study = make_study([0.5])
    with pytest.raises(ValueError, match="kind must be one of"):
        study_plots(study, kind="bokeh")
    monkeypatch.setattr(optuna.visualization, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs the plotly package"):
        study_plots(study, kind="plotly")
