"""Starting a run and following it: Start, Check set-up, Show the live run, and the live view (status,
galleries, best, trials, plots, the best recipe, the rating panel) refreshed while the run goes on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from ...errors import ConfigError
from .. import catalog as cat
from .. import compat, views
from .. import form as fm
from ..plots import study_plots
from ..runs import RunBusy, RunManager
from .config_file import set_up_from
from .context import TabContext, model_config
from .results import PLOTS
from .run_view import RATING_VIEW, rating_view
from .wiring import PANEL_ACCORDIONS, PROBLEM_BOXES, Components, bound, connect, on_form, problem_box

log = logging.getLogger("sd_optim")

# what the live view updates
LIVE_VIEW = ["status", "gallery", "best_gallery", "best", "trials_table", *PLOTS, "recipe_file", *RATING_VIEW]


def _ids(images: list[Any]) -> list[int]:
    return [id(i) for i in images]


def figures(study, kind: str) -> dict[str, Any]:
    """The study's plots by component name (None each while there is no study)."""
    if study is None:
        return dict.fromkeys(PLOTS)
    drawn = study_plots(study, kind=kind)
    return {name: drawn.get(name.removeprefix("plot_")) for name in PLOTS}


def live_view(manager: Callable[[], RunManager], state: dict[str, Any], kind: str) -> dict[str, Any]:
    """The live view's updates; ``state`` remembers what is shown, so only what changed is sent."""
    runs = manager()
    live = runs.current
    run = live.runner.state if live is not None else None
    study = run.study if run is not None else None
    status = runs.status()
    out: dict[str, Any] = {"status": views.status_markdown(status)}
    images = list(live.images) if live is not None else []
    best_images = list(live.best_images) if live is not None else []
    if _ids(images) != state.get("images"):
        out["gallery"] = images
    if _ids(best_images) != state.get("best"):
        out["best_gallery"] = best_images
    state["images"], state["best"] = _ids(images), _ids(best_images)
    # the run's own count, not the study's trials: polled several times a second, reading every
    # trial of a long study each time would cost more than the trials themselves
    trials_done = status.get("trials_done", 0)
    if trials_done != state.get("done", -1):
        state["done"] = trials_done
        out["best"] = views.best_markdown(study)
        out["trials_table"] = compat.table(views.trial_rows(study), len(views.TRIAL_COLUMNS))
        out.update(figures(study, kind))
    if live is not None and live.finished is not None and live.finished.best_recipe:
        out["recipe_file"] = live.finished.best_recipe
    out.update(rating_view(manager, state))
    return out


def follow(manager: Callable[[], RunManager], state: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The live view, again whenever the run changes, until it ends (the last view is the final one)."""
    state = state if state is not None else {}
    kind = compat.plot_kind()
    runs = manager()
    seen = -1
    while True:
        seen = runs.wait_for_change(seen, 1.0)
        alive = runs.live  # read before the view, so the last view shown is the final one
        yield live_view(manager, state, kind)
        if not alive:
            return
        time.sleep(0.25)  # at most a few updates a second, however fast events arrive


def problems_shown(problems: list[Any], head: str) -> dict[str, Any]:
    """Each panel's problems in its box, its accordion opened; the status line says ``head``, the
    first problem and where it is, and lists the problems of no panel (the page scrolls to the
    first marked panel: javascript/sd_optim.js)."""
    by_panel = fm.problems_by_panel(problems)
    out: dict[str, Any] = {problem_box(p): views.problems_markdown(by_panel[p]) for p in fm.PANELS}
    out.update({f"panel_{p}": gr.update(open=True) for p in fm.PANELS if by_panel[p]})
    marked = [(p, by_panel[p][0]) for p in fm.PANELS if by_panel[p]]
    if marked:
        panel, first = marked[0]
        more = len(problems) - 1
        head += f" {first} (panel {fm.PANEL_TITLES[panel]}" + (f"; {more} more marked)" if more else ")")
    other = by_panel["other"]
    out["status"] = head + ("\n" + views.problems_markdown(other) if other else "")
    return out


def on_start(ctx: TabContext, manager: Callable[[], RunManager], form: dict[str, Any]):
    data = fm.form_to_data(form, ctx.catalog.path_for)
    cleared = dict.fromkeys(PROBLEM_BOXES, "")
    try:
        manager().start(data, fresh_name=True, **fm.start_options(form))
    except RunBusy as e:
        yield {**cleared, "status": str(e)}
        if manager().live:  # a run started elsewhere (another tab, the API): follow it
            for view in follow(manager):
                yield {**cleared, **view}
        return
    except ConfigError as e:
        yield problems_shown(e.problems, "**The run did not start:**")
        return
    except Exception as e:
        log.exception("sd-optim: the run could not start")
        yield {**cleared, "status": f"**The run could not start:** {type(e).__name__}: {e}"}
        return
    for view in follow(manager):
        yield {**cleared, **view}


def on_attach(ctx: TabContext, manager: Callable[[], RunManager]):
    """A page (re)loaded: the live (or last) run's set-up in the panels, then the run followed."""
    current = manager().current
    if current is None:
        yield {"status": gr.update()}
        return
    try:
        yield set_up_from(ctx, current.runner.config.absolute().to_dict())
    except ValueError:  # a set-up the panels cannot show (say, a file gone since): they keep theirs
        log.warning("sd-optim: the run's set-up could not be shown in the panels", exc_info=True)
    yield from follow(manager)


def on_check(ctx: TabContext, manager: Callable[[], RunManager], form: dict[str, Any]) -> dict[str, Any]:
    data = fm.form_to_data(form, ctx.catalog.path_for)
    problems = cat.check_setup(data, manager().defaults, model_config(ctx, form), ctx.sampler_problems)
    if not problems:
        return {**problems_shown([], ""), "status": "The set-up is complete: press Start."}
    return problems_shown(problems, "**Fix the set-up:**")


def wire_live(components: Components, ctx: TabContext, manager: Callable[[], RunManager]) -> None:
    connect(components, "start", "click", on_form(on_start, ctx, manager), fm.FIELDS,
            [*PROBLEM_BOXES, *PANEL_ACCORDIONS, *LIVE_VIEW],
            show_progress="hidden", **compat.unlimited())
    connect(components, "attach", "click", bound(on_attach, ctx, manager), [], [*fm.FIELDS, *LIVE_VIEW],
            show_progress="hidden", **compat.unlimited())
    connect(components, "check", "click", on_form(on_check, ctx, manager), fm.FIELDS,
            [*PROBLEM_BOXES, *PANEL_ACCORDIONS, "status"])
