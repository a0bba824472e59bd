"""Set-up panel 6 · Optimizer: the Optuna sampler, trials, early stopping, the study (new, resumed or
forked), what happens to the best merge, the run folder; and applying trials / early stopping to
the live run."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from ...errors import ConfigError
from .. import catalog as cat
from .. import compat, views
from .. import form as fm
from ..runs import RunManager
from .context import TabContext, elem
from .results import PLOTS
from .wiring import Components, bound, connect, on_form, problem_box, problems_markdown, set_up_panel

WATCH_POLL_S = 5.0  # how often a watched study is read again while trials run in it
WATCH_IDLE_READS = 3  # a watch stops following after this many reads with no trial running
WATCH_MAX_S = 3600.0  # and after an hour in any case
_watches = itertools.count(1)
_latest_watch = [0]  # the watch that follows; an earlier one stops at its next read


def _samplers():
    from ...config import SAMPLERS

    return SAMPLERS


def _pruners():
    from ...config import PRUNERS

    return PRUNERS


def build_optimizer(ctx: TabContext, form: dict[str, Any]) -> Components:
    parts: Components = {}
    with set_up_panel(parts, "optimizer", open=False):
        with gr.Row():
            parts["sampler"] = gr.Dropdown(list(_samplers()), value=form["sampler"], allow_custom_value=True,
                                           label=fm.control_label("sampler"), elem_id=elem("sampler"))
            parts["trials"] = gr.Number(form["trials"], precision=0, label=fm.control_label("trials"),
                                        elem_id=elem("trials"))
            parts["seed"] = gr.Textbox(str(form["seed"]), label=fm.control_label("seed"), elem_id=elem("seed"))
        with gr.Row():
            parts["apply_live"] = gr.Button("Apply trials and early stopping to the live run",
                                            elem_id=elem("apply_live"))
            parts["apply_status"] = gr.Markdown("", elem_id=elem("apply_status"))
        parts["sampler_options"] = gr.Textbox(form["sampler_options"], label=fm.control_label("sampler_options"),
                                              elem_id=elem("sampler_options"))
        with gr.Row():
            parts["pruner"] = gr.Dropdown(list(_pruners()), value=form["pruner"], label=fm.control_label("pruner"),
                                          elem_id=elem("pruner"))
            parts["pruner_options"] = gr.Textbox(form["pruner_options"], label=fm.control_label("pruner_options"),
                                                 elem_id=elem("pruner_options"))
            parts["confirm_top"] = gr.Number(form["confirm_top"], precision=0, label=fm.control_label("confirm_top"),
                                             elem_id=elem("confirm_top"))
            parts["max_suggest_s"] = gr.Number(form["max_suggest_s"], label=fm.control_label("max_suggest_s"),
                                               elem_id=elem("max_suggest_s"))
        with gr.Row():
            parts["patience"] = gr.Number(form["patience"], precision=0, label=fm.control_label("patience"),
                                          elem_id=elem("patience"))
            parts["min_improvement"] = gr.Number(form["min_improvement"], label=fm.control_label("min_improvement"),
                                                 elem_id=elem("min_improvement"))
        with gr.Row():
            parts["baseline"] = gr.CheckboxGroup(["defaults", "midpoint"], value=form["baseline"],
                                                 label=fm.control_label("baseline"), elem_id=elem("baseline"))
            parts["score_inputs"] = gr.Checkbox(form["score_inputs"], label=fm.control_label("score_inputs"),
                                                elem_id=elem("score_inputs"))
            parts["on_trial_error"] = gr.Radio(["continue", "stop"], value=form["on_trial_error"],
                                               label=fm.control_label("on_trial_error"), elem_id=elem("on_trial_error"))
        with gr.Row():
            parts["start_from"] = gr.Textbox(form["start_from"], lines=2, label=fm.control_label("start_from"),
                                             elem_id=elem("start_from"))
            parts["start_from_study"] = gr.Textbox(form["start_from_study"], label=fm.control_label("start_from_study"),
                                                   elem_id=elem("start_from_study"))
            parts["coarse_trials"] = gr.Number(form["coarse_trials"], precision=0,
                                               label=fm.control_label("coarse_trials"), elem_id=elem("coarse_trials"))
        parts.update(_study_controls(ctx, form))
        with gr.Row():
            parts["output_dir"] = gr.Textbox(form["output_dir"], elem_id=elem("output_dir"),
                                             label=fm.control_label("output_dir", help=f"empty: {ctx.output_dir()}"))
            parts["device"] = gr.Textbox(form["device"], label=fm.control_label("device"), elem_id=elem("device"),
                                         visible=ctx.standalone)
        parts.update(problems_markdown("optimizer"))
    return parts


def _study_controls(ctx: TabContext, form: dict[str, Any]) -> Components:
    """The study (its name, storage, new / resumed / forked) and what becomes of the best merge."""
    parts: Components = {}
    with gr.Row():
        parts["study"] = gr.Textbox(form["study"], label=fm.control_label("study"), elem_id=elem("study"))
        storage_help = f"empty: {ctx.storage() or 'SQLite in the run folder'}"
        parts["storage"] = gr.Textbox(form["storage"], label=fm.control_label("storage", help=storage_help),
                                      elem_id=elem("storage"))
    with gr.Row():
        parts["start_as"] = gr.Radio(list(fm.START_AS), value=form["start_as"], label="Start as",
                                     info="join: work on the study named above with the other WebUIs and "
                                          "workers sharing its storage URL",
                                     elem_id=elem("start_as"))
        parts["source_study"] = gr.Dropdown(cat.study_choices(ctx.output_dir(), ctx.storage()), value=None,
                                            allow_custom_value=True, label="Study to resume or fork",
                                            elem_id=elem("source_study"), scale=3)
        parts["refresh_studies"] = gr.Button("↻", elem_id=elem("refresh_studies"), min_width=40, scale=0)
        parts["watch_study"] = gr.Button("Watch", elem_id=elem("watch_study"), min_width=60, scale=0)
    with gr.Row():
        parts["keep_best"] = gr.Checkbox(form["keep_best"], label=fm.control_label("keep_best"),
                                         elem_id=elem("keep_best"))
        parts["save_best"] = gr.Checkbox(form["save_best"], label=fm.control_label("save_best"),
                                         elem_id=elem("save_best"))
        parts["save_name"] = gr.Textbox(form["save_name"], label=fm.control_label("save_name"),
                                        elem_id=elem("save_name"))
    return parts


def on_watch_study(ctx: TabContext, manager: Callable[[], RunManager], output_dir: str, storage: str, choice: str):
    """The picked study's trials, best and plots in the run view, read-only: a shared study other
    WebUIs and workers run (or any earlier one). While trials run in it, it is read again every
    ``WATCH_POLL_S`` and shown as it changes; it stops following once nothing has run for a few
    reads, after an hour, when a run starts in this WebUI (its live view takes the place), or when
    Watch is pressed again."""
    from optuna.trial import TrialState

    token = next(_watches)
    _latest_watch[0] = token
    try:
        study = cat.watched_study(output_dir or ctx.output_dir(), storage or ctx.storage(), choice)
    except ConfigError as e:
        yield {problem_box("optimizer"): views.problems_markdown(e.problems)}
        return
    shown, idle, deadline = None, 0, time.monotonic() + WATCH_MAX_S
    while True:
        trials = study.get_trials(deepcopy=False)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        idle = 0 if running else idle + 1
        following = (running or (shown is not None and idle < WATCH_IDLE_READS)) and time.monotonic() < deadline
        seen = (len(trials), running, sum(t.state.is_finished() for t in trials))
        if seen != shown or not following:
            yield _watch_view(study, len(trials), running, following)
            shown = seen
        if not following:
            return
        time.sleep(WATCH_POLL_S)
        if _latest_watch[0] != token or manager().live:  # another watch, or a run here, has the view
            return


def _watch_view(study, n: int, running: int, following: bool) -> dict[str, Any]:
    from .live import figures

    if following:
        note = (f"*Watching study **{study.study_name}** ({n} trials, {running} running), live: read again "
                f"every {WATCH_POLL_S:.0f} s while trials run; read-only.*")
    else:
        note = (f"*Study **{study.study_name}** ({n} trials) as it is now, read-only: nothing runs in it "
                "(press **Watch** again to follow it once trials run).*")
    return {problem_box("optimizer"): "", "best": f"{note}\n\n{views.best_markdown(study)}",
            "trials_table": compat.table(views.trial_rows(study), len(views.TRIAL_COLUMNS)),
            **figures(study, compat.plot_kind())}


def on_refresh_studies(ctx: TabContext, output_dir: str, storage: str) -> dict[str, Any]:
    return {"source_study": gr.update(choices=cat.study_choices(output_dir or ctx.output_dir(),
                                                                storage or ctx.storage()))}


def on_apply_live(ctx: TabContext, manager: Callable[[], RunManager], form: dict[str, Any]) -> dict[str, Any]:
    try:
        lines = manager().adjust(fm.form_to_data(form, ctx.catalog.path_for))
    except ConfigError as e:
        return {"apply_status": views.problems_markdown(e.problems)}
    return {"apply_status": "Applied to the live run: " + "; ".join(lines) + "."}


def wire_optimizer(components: Components, ctx: TabContext, manager: Callable[[], RunManager]) -> None:
    connect(components, "refresh_studies", "click", bound(on_refresh_studies, ctx), ["output_dir", "storage"],
            ["source_study"])
    connect(components, "watch_study", "click", bound(on_watch_study, ctx, manager),
            ["output_dir", "storage", "source_study"], [problem_box("optimizer"), "best", "trials_table", *PLOTS],
            show_progress="hidden", **compat.unlimited(), **compat.repeatable())
    connect(components, "apply_live", "click", on_form(on_apply_live, ctx, manager), fm.FIELDS, ["apply_status"],
            queue=False)
