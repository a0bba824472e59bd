"""The run view: the Start / Stop / Pause / Resume / Check bar, the status line, the manual scorer's
rating panel and the current trial's gallery; and the handlers of the bar and of rating by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from .. import views
from ..runs import RunManager
from .context import TabContext, elem
from .wiring import Components, bound, connect

RATINGS = range(1, 11)
RATING_VIEW = ["rate", "rate_image", "rate_caption"]  # the rating panel, what rating_view updates


def build_run_view(ctx: TabContext) -> Components:
    parts: Components = {}
    if ctx.notice:
        gr.Markdown(f"⚠ {ctx.notice}", elem_id=elem("notice"), elem_classes=[elem("error")])
    with gr.Row(elem_id=elem("bar")):
        parts["start"] = gr.Button("Start", variant="primary", elem_id=elem("start"))
        parts["stop"] = gr.Button("Stop", elem_id=elem("stop"))
        parts["pause"] = gr.Button("Pause", elem_id=elem("pause"))
        parts["resume"] = gr.Button("Resume", elem_id=elem("resume"))
        parts["check"] = gr.Button("Check set-up", elem_id=elem("check"))
        # clicked by javascript/sd_optim.js when the page loads: shows the live (or last) run again
        # after a reload or in a second browser tab
        parts["attach"] = gr.Button("Show the live run", elem_id=elem("attach"), elem_classes=[elem("hidden")])
    gr.Markdown("Keys (while no text field has the focus): **S** stop · **P** pause / resume · "
                "**M** rating by hand on / off · **1**–**9**, **0** rate the image waiting (0 = 10)",
                elem_id=elem("keys"), elem_classes=[elem("help")])
    parts["status"] = gr.Markdown("Set up the run on the left, then press Start.", elem_id=elem("status"))
    with gr.Group(visible=False, elem_id=elem("rate")) as parts["rate"]:  # the manual scorer's
        parts["rate_caption"] = gr.Markdown("", elem_id=elem("rate_caption"))
        parts["rate_image"] = gr.Image(type="pil", interactive=False, show_label=False, height=256,
                                       elem_id=elem("rate_image"))
        with gr.Row():
            for k in RATINGS:
                parts[f"rate_{k}"] = gr.Button(str(k), elem_id=elem(f"rate_{k}"), min_width=36)
        with gr.Row():
            parts["rate_skip"] = gr.Button("Skip image", elem_id=elem("rate_skip"))
            parts["rate_value"] = gr.Number(5, precision=0, label="Rating for the whole trial",
                                            elem_id=elem("rate_value"))
            parts["rate_trial"] = gr.Button("Rate the whole trial", elem_id=elem("rate_trial"))
    parts["gallery"] = gr.Gallery(label="Current trial", columns=4, height=300, object_fit="contain",
                                  preview=False, elem_id=elem("gallery"))
    return parts


def rating_view(manager: Callable[[], RunManager], state: dict[str, Any]) -> dict[str, Any]:
    """The rating panel: the first image waiting for a rating (``state`` remembers which one is
    shown, so that the same image is not sent again), or hidden when none waits."""
    waiting = manager().waiting_for_ratings()
    if not waiting:
        state["rating"] = None
        return {"rate": gr.update(visible=False), "rate_image": gr.update(), "rate_caption": ""}
    _position, item, trial = waiting[0]
    shown = id(item) == state.get("rating")
    state["rating"] = id(item)
    which = f"trial {trial}" if trial >= 0 else "an input model"  # score_inputs' reference rows
    text = (f"**Rate {which} · {item.payload} #{item.index}** (1–10, keys 1–9 and 0 for 10): "
            f"{len(waiting)} image{'s' if len(waiting) != 1 else ''} of this prompt set to rate")
    return {"rate": gr.update(visible=True), "rate_image": gr.update() if shown else item.image,
            "rate_caption": text}


def on_rate(manager: Callable[[], RunManager], given: Any, whole_trial: bool = False) -> dict[str, Any]:
    """Rate the image waiting (1–10 or "skip"), or every image of its trial."""
    try:
        manager().rate(int(given) if given != "skip" else given, whole_trial=whole_trial)
    except (TypeError, ValueError) as e:
        return {"rate_caption": f"⚠ {e}"}
    return rating_view(manager, {})


def on_rate_trial(manager: Callable[[], RunManager], value: Any) -> dict[str, Any]:
    return on_rate(manager, value, whole_trial=True)


def on_pause(manager: Callable[[], RunManager]) -> dict[str, Any]:
    return {"status": views.status_markdown(manager().pause())}


def on_resume(manager: Callable[[], RunManager]) -> dict[str, Any]:
    return {"status": views.status_markdown(manager().resume())}


def on_stop(manager: Callable[[], RunManager]) -> dict[str, Any]:
    return {"status": views.status_markdown(manager().stop("stopped from the tab")) or "Stopping…"}


def wire_run_view(components: Components, manager: Callable[[], RunManager]) -> None:
    """The bar's Pause / Resume / Stop and the rating buttons (Start, Check and Show the live run
    are wired by :mod:`.live`)."""
    for k in RATINGS:
        connect(components, f"rate_{k}", "click", bound(on_rate, manager, k), [], RATING_VIEW, queue=False)
    connect(components, "rate_skip", "click", bound(on_rate, manager, "skip"), [], RATING_VIEW, queue=False)
    connect(components, "rate_trial", "click", bound(on_rate_trial, manager), ["rate_value"], RATING_VIEW,
            queue=False)
    connect(components, "pause", "click", bound(on_pause, manager), [], ["status"], queue=False)
    connect(components, "resume", "click", bound(on_resume, manager), [], ["status"], queue=False)
    connect(components, "stop", "click", bound(on_stop, manager), [], ["status"], queue=False)
