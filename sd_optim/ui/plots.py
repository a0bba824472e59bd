"""Optuna's study plots for the tab, as plotly or matplotlib figures, each one only once the study
has the data it needs (``None`` until then).

No gradio here: the tab hands these figures to ``gr.Plot``. Drawing never raises and lets no
warning out: the tab redraws on every refresh while a run writes to the study.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from ..run.study import objective_names, trial_value

log = logging.getLogger("sd_optim")

PLOT_NAMES: dict[str, str] = {
    "history": "Optimization history",
    "importance": "Parameter importances",
    "slice": "Slice plot",
    "parallel": "Parallel coordinates",
    "intermediate": "Score after each prompt set (pruned trials end early)",
    "pareto": "Pareto front (several objectives)",
}
KINDS = ("plotly", "matplotlib")

# Two plots side by side on a 1280 px page.
WIDTH_PX, HEIGHT_PX, DPI = 600, 360, 100
LABEL_PX = 24
# Subplots or axes beyond these are unreadable at that width: the most important parameters
# are shown (block-wise merges have 20 and more).
MAX_PARAMS = {"slice": 4, "parallel": 6}

# matplotlib's rcParams and pyplot's figure registry are process-wide, and
# warnings.catch_warnings swaps a process-wide filter list: one drawing at a time.
_DRAW_LOCK = threading.Lock()


def preferred_kind(gradio_major: int) -> str:
    """The figure kind to give ``gr.Plot`` under that gradio major version.

    Checked in Chromium with plotly 7.1: gradio 3.41 (plotly.js 2.11.1 inside) and 4.40 (2.10.1)
    both draw these plotly figures and matplotlib ones (sent as an image). Plotly is chosen
    there, being interactive, when it is installed: optuna's plotly plots need it and the WebUIs
    do not ship it, while gradio depends on matplotlib. Other majors get the image.
    """
    if gradio_major in (3, 4) and optuna.visualization.is_available():
        return "plotly"
    return "matplotlib"


def study_plots(study: optuna.Study, *, kind: str) -> dict[str, Any | None]:
    """The plots of ``PLOT_NAMES`` for a single-objective study, each a ``plotly`` Figure or a
    ``matplotlib`` Figure (``kind``), or None while it cannot be drawn yet:

    - history, slice, parallel: at least one completed trial with a finite value;
    - importance: at least two such trials whose values differ, and two parameters (optuna
      gives equal importances for fewer trials or tied values; one parameter is always 100%);
    - intermediate: a study run with a pruner (``optimizer.pruner``): each trial's running score
      after each prompt set, pruned trials included (their line ends where they were stopped).

    With several objectives (``scoring.objectives``) the history, importance, slice and parallel
    plots show the mean of the objectives (the balanced value), and ``pareto`` every completed
    trial by its objectives, the front drawn apart (the first two objectives, three in plotly).

    Failed, pruned and running trials are left out of the others. A plot that fails to draw is
    logged and given as None."""
    if kind not in KINDS:
        raise ValueError(f"plots: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "plotly" and not optuna.visualization.is_available():
        raise ValueError("plots: kind 'plotly' needs the plotly package, which is not installed "
                         "(pip install plotly, or use kind 'matplotlib')")
    plots: dict[str, Any | None] = dict.fromkeys(PLOT_NAMES)
    trials = _finite_complete_trials(study)
    if not trials:
        return plots
    names = _param_names(trials)
    importance_ready = len(trials) >= 2 and len({trial_value(t) for t in trials}) >= 2 and len(names) >= 2
    several = len(study.directions) > 1
    # several objectives: Optuna's single-value plots need a target; theirs is the balanced value
    target = {"target": trial_value, "target_name": BALANCED} if several else {}

    vis = _visualization(kind)
    with _DRAW_LOCK:
        importances = _quietly("importances", lambda: optuna.importance.get_param_importances(
            study, target=target.get("target"))) if importance_ready else None
        ranked = sorted(names, key=lambda n: -importances.get(n, 0.0)) if importances else names
        plots["history"] = _draw(kind, "history", lambda: vis.plot_optimization_history(study, **target))
        if importances and kind == "plotly":
            plots["importance"] = _draw(kind, "importance", lambda: _plotly_importances(importances))
        elif importances:
            plots["importance"] = _draw(kind, "importance", lambda: vis.plot_param_importances(study, **target))
        if not several and any(t.intermediate_values for t in study.get_trials(deepcopy=False, states=_REPORTED)):
            plots["intermediate"] = _draw(kind, "intermediate", lambda: vis.plot_intermediate_values(study))
        if names:
            plots["slice"] = _draw(kind, "slice", lambda: vis.plot_slice(
                study, params=ranked[:MAX_PARAMS["slice"]], **target))
            plots["parallel"] = _draw(kind, "parallel", lambda: vis.plot_parallel_coordinate(
                study, params=ranked[:MAX_PARAMS["parallel"]], **target))
        if several:
            plots["pareto"] = _draw(kind, "pareto", lambda: _pareto(vis, study, kind))
    return plots


BALANCED = "mean of the objectives"


def _pareto(vis, study: optuna.Study, kind: str):
    """Optuna's Pareto-front plot by the objectives' names; past what it draws (3 axes in plotly,
    2 in matplotlib) the first ones."""
    names = objective_names(study)
    axes = min(len(names), 3 if kind == "plotly" else 2)
    if axes == len(names):
        return vis.plot_pareto_front(study, target_names=names)
    return vis.plot_pareto_front(study, targets=lambda t: tuple(t.values[:axes]), target_names=names[:axes])


_REPORTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _finite_complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    # optuna leaves out (and logs) trials with an infinite value; counting them would let a plot
    # be drawn from nothing
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [t for t in trials if t.values is not None and all(math.isfinite(v) for v in t.values)]


def _param_names(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return sorted({name for t in trials for name in t.params})


def _plotly_importances(importances: dict[str, float]):
    """optuna's plotly importance chart, drawn here: optuna's own deep-copies every trial once per
    parameter for the hover text (about 1 s for 200 trials of 26 parameters, on each refresh)."""
    import plotly.graph_objects as go

    names = sorted(importances, key=importances.__getitem__)  # the largest at the top
    values = [importances[n] for n in names]
    bar = go.Bar(x=values, y=names, orientation="h", textposition="outside", cliponaxis=False,
                 text=[f"{v:.2f}" if v >= 0.01 else "<0.01" for v in values],
                 hovertemplate="%{y}: %{x:.3f}<extra></extra>")
    return go.Figure(bar, go.Layout(title="Hyperparameter Importances",
                                    xaxis={"title": "Hyperparameter Importance"},
                                    yaxis={"title": "Hyperparameter"}))


def _visualization(kind: str):
    # optuna.visualization imports pyplot (for both kinds): choose the backend first
    _prefer_agg()
    if kind == "plotly":
        return importlib.import_module("optuna.visualization")
    return importlib.import_module("optuna.visualization.matplotlib")


def _prefer_agg() -> None:
    """Agg as the backend unless one was chosen: the tab draws in the server's worker threads,
    where a GUI backend (TkAgg on a Windows desktop) fails. gradio switches to Agg around each
    event and back afterwards, which races when two events overlap."""
    try:
        import matplotlib
    except ImportError:
        return
    # None while no backend is chosen or resolved (private: an older matplotlib keeps its own)
    if getattr(matplotlib.rcParams, "_get_backend_or_none", lambda: "unknown")() is None:
        matplotlib.use("Agg")


def _pyplot():
    _prefer_agg()
    import matplotlib.pyplot as plt

    return plt


def _draw(kind: str, name: str, plot: Callable[[], Any]) -> Any | None:
    if kind == "plotly":
        return _quietly(name, lambda: _fit_plotly(plot()))
    plt = _pyplot()
    before = set(plt.get_fignums())
    # optuna calls plt.style.use("ggplot") on every plot: rc_context restores the host's style
    with plt.rc_context({"figure.figsize": (WIDTH_PX / DPI, HEIGHT_PX / DPI), "figure.dpi": DPI,
                         "figure.constrained_layout.use": True}):
        figure = _quietly(name, lambda: _fit_matplotlib(plot()))
    # Out of pyplot's registry (it would grow by four figures a refresh), a figure left half
    # drawn included; a Figure keeps its Agg canvas, so gr.Plot can still savefig it.
    for number in set(plt.get_fignums()) - before:
        plt.close(number)
    return figure


def _fit_matplotlib(axes):
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.set_size_inches(WIDTH_PX / DPI, HEIGHT_PX / DPI)  # optuna widens the slice plot
    # keep the top clear of the label gr.Plot draws over the image's top-left corner
    figure.get_layout_engine().set(rect=(0, 0, 1, 1 - LABEL_PX / HEIGHT_PX))
    return figure


def _fit_plotly(figure):
    """``figure`` sized to its column, with plain lists for arrays: plotly >= 6 sends numpy arrays
    as typed arrays, which the plotly.js inside gradio 3.41 and 4.40 shows as an empty plot."""
    import numpy as np
    import plotly.graph_objects as go

    def plain(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    fitted = go.Figure([plain(trace.to_plotly_json()) for trace in figure.data], figure.layout)
    # the column's width; optuna sets a width of 300 px per slice subplot
    fitted.update_layout(width=None, height=HEIGHT_PX, autosize=True,
                         margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fitted


def _quietly(name: str, call: Callable[[], Any]) -> Any | None:
    """``call()``, its warnings logged at debug level; None (logged) if it raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn must not break the tab
            log.warning("sd-optim plots: cannot draw %s: %s: %s", name, type(e).__name__, e)
            result = None
    for w in caught:
        log.debug("sd-optim plots: %s: %s: %s", name, w.category.__name__, w.message)
    return result


# at import, when the tab is built: on Windows the first gradio event resolves the GUI backend
_prefer_agg()
