"""The run view's tabs: the best trial so far, the trials table, the study's plots, and the results
(a trial's recipe, saving it as a checkpoint, keeping it loaded, looking at it again)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from ...errors import ConfigError, Problem
from .. import compat, views
from ..plots import PLOT_NAMES
from ..runs import RunBusy, RunManager
from .context import TabContext, elem
from .wiring import Components, bound, connect

log = logging.getLogger("sd_optim")

PLOTS = [f"plot_{key}" for key in PLOT_NAMES]  # the plot components' names, in PLOT_NAMES order
RESULT_VIEW = ["recipe_file", "result_status"]


def build_best() -> Components:
    parts: Components = {}
    with gr.Tab("Best so far", elem_id=elem("tab_best")), gr.Row():
        parts["best_gallery"] = gr.Gallery(label="Best trial", columns=3, height=220, object_fit="contain",
                                           elem_id=elem("best_gallery"))
        parts["best"] = gr.Markdown("No trial yet.", elem_id=elem("best"))
    return parts


def build_trials() -> Components:
    with gr.Tab("Trials", elem_id=elem("tab_trials")) as tab:
        table = gr.Dataframe(compat.table([], len(views.TRIAL_COLUMNS)), headers=views.TRIAL_COLUMNS, type="array", interactive=False,
                             wrap=True, label="Trials (click one to pick it in Results)", elem_id=elem("trials_table"))
    return {"trials_table": table, "tab_trials": tab}


def on_trials_tab(manager: Callable[[], RunManager]) -> dict[str, Any]:
    """The Trials tab opened: the table sent again. gradio 4 may not draw rows a table received
    while its tab was hidden until it is sent once more."""
    live = manager().current
    run = live.runner.state if live is not None else None
    return {"trials_table": compat.table(views.trial_rows(run.study if run is not None else None), len(views.TRIAL_COLUMNS))}


def build_plots() -> Components:
    """The study's plots, two a row."""
    parts: Components = {}
    names = list(PLOT_NAMES.items())
    with gr.Tab("Plots", elem_id=elem("tab_plots")):
        for i in range(0, len(names), 2):
            with gr.Row():
                for key, label in names[i:i + 2]:
                    parts[f"plot_{key}"] = gr.Plot(label=label, elem_id=elem(f"plot_{key}"))
    return parts


def build_results() -> Components:
    parts: Components = {}
    with gr.Tab("Results", elem_id=elem("tab_results")):
        with gr.Row():
            parts["trial"] = gr.Textbox("", label="Trial (empty: the best)", elem_id=elem("trial"))
            parts["ckpt_name"] = gr.Textbox("", label="Checkpoint name (empty: <study>-trial<N>)",
                                            elem_id=elem("ckpt_name"))
        with gr.Row():
            parts["get_recipe"] = gr.Button("Recipe (.mecha)", elem_id=elem("get_recipe"))
            parts["save_ckpt"] = gr.Button("Save as checkpoint", elem_id=elem("save_ckpt"))
            parts["keep"] = gr.Button("Keep loaded", elem_id=elem("keep"))
            parts["look"] = gr.Button("Look again", elem_id=elem("look"))
        parts["recipe_file"] = gr.File(label="Recipe", interactive=False, elem_id=elem("recipe_file"))
        parts["result_status"] = gr.Markdown("", elem_id=elem("result_status"))
        parts["look_gallery"] = gr.Gallery(label="The trial again (the original model is restored after)",
                                           columns=4, height=220, object_fit="contain", elem_id=elem("look_gallery"))
    return parts


def trial_number(tools, text: Any) -> int:
    """The trial a Results action is about: the number typed (``#3`` or ``3``), else the best."""
    text = str(text or "").strip().lstrip("#")
    if not text:
        return tools.best_number()
    try:
        return int(text)
    except ValueError:
        raise ConfigError([Problem("trial", "give a trial number", text)]) from None


def guarded(action: Callable[..., str]) -> Callable[..., dict[str, Any]]:
    """A Results action whose failure is shown in the results status, not raised into gradio."""
    def run(*args):
        try:
            return action(*args)
        except RunBusy as e:
            return {"result_status": f"{e}. Stop it (or wait for it) first."}
        except ConfigError as e:
            return {"result_status": views.problems_markdown(e.problems)}
        except Exception as e:  # the tab's boundary: show it, keep the WebUI up
            log.exception("sd-optim: %s failed", action.__name__)
            return {"result_status": f"{action.__name__} failed: {type(e).__name__}: {e}"}
    run.__name__ = action.__name__
    return run


def recipe_action(manager: Callable[[], RunManager], text: Any) -> dict[str, Any]:
    tools = manager().trial_tools()
    number = trial_number(tools, text)
    path = tools.recipe_file(number)
    return {"recipe_file": str(path), "result_status": f"Recipe of trial {number}: `{path}`"}


def save_action(manager: Callable[[], RunManager], text: Any, name: Any) -> dict[str, Any]:
    with manager().trial_action("saving a checkpoint") as tools:
        number = trial_number(tools, text)
        path = tools.save_checkpoint(number, str(name or "").strip())
    return {"result_status": f"Saved trial {number} as `{path}`"}


def keep_action(manager: Callable[[], RunManager], text: Any) -> dict[str, Any]:
    with manager().trial_action("keeping a trial loaded") as tools:
        kept = tools.keep(trial_number(tools, text))
    until = manager().host.kept_until
    return {"result_status": f"Trial #{kept.trial} is loaded now (value {kept.value:.4f}); {until}."}


def on_look(manager: Callable[[], RunManager], text: Any):
    """Generate a trial's images again, showing them as they come; the original model is back after."""
    try:
        with manager().trial_action("looking at a trial again") as tools:
            number = trial_number(tools, text)
            images = []
            for payload, generated in tools.look(number):
                images.append((generated.image, f"{payload} · seed {generated.seed}"))
                yield {"look_gallery": images, "result_status": f"Trial #{number}: {len(images)} images so far…"}
        count = f"{len(images)} image{'s' if len(images) != 1 else ''}"
        yield {"look_gallery": images, "result_status": f"Trial #{number} again ({count}); the original model is back."}
    except RunBusy as e:
        yield {"result_status": f"{e}. Stop it (or wait for it) first."}
    except ConfigError as e:
        yield {"result_status": views.problems_markdown(e.problems)}
    except Exception as e:  # the tab's boundary: show it, keep the WebUI up
        log.exception("sd-optim: look again failed")
        yield {"result_status": f"Look again failed: {type(e).__name__}: {e}"}


def on_select_trial(table, evt: gr.SelectData):
    """A click in the trials table picks that trial in Results."""
    rows = compat.table_rows(table)
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    try:
        return str(int(rows[row][0]))
    except (IndexError, TypeError, ValueError):
        return gr.update()


def wire_results(components: Components, ctx: TabContext, manager: Callable[[], RunManager]) -> None:
    connect(components, "get_recipe", "click", guarded(bound(recipe_action, manager)), ["trial"], RESULT_VIEW)
    connect(components, "save_ckpt", "click", guarded(bound(save_action, manager)), ["trial", "ckpt_name"],
            RESULT_VIEW)
    connect(components, "keep", "click", guarded(bound(keep_action, manager)), ["trial"], RESULT_VIEW)
    connect(components, "look", "click", bound(on_look, manager), ["trial"], ["look_gallery", "result_status"],
            **compat.unlimited())
    connect(components, "tab_trials", "select", bound(on_trials_tab, manager), [], ["trials_table"], queue=False)
    # gradio passes the click's SelectData by the handler's annotation: bound directly, one output
    components["trials_table"].select(on_select_trial, [components["trials_table"]], [components["trial"]])
