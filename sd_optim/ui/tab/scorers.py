"""Set-up panel 5 · Scorers: which scorers, their weights and options, how scores are averaged, and
whether each scorer finds what it needs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import compat
from .. import form as fm
from .context import TabContext, elem, scorer_text
from .wiring import Components, bound, connect, problems_markdown, set_up_panel


def _means():
    from ...config import MEANS

    return MEANS


def build_scorers(ctx: TabContext, form: dict[str, Any]) -> Components:
    parts: Components = {}
    with set_up_panel(parts, "scorers", open=False):
        parts["scorer_use"] = gr.CheckboxGroup(fm.scorer_names(form["scorers"]), value=form["scorer_use"],
                                               label="Use (one click each; their weights and options below)",
                                               elem_id=elem("scorer_use"))
        parts["scorers"] = gr.Dataframe(compat.table(form["scorers"], 3), headers=fm.SCORER_COLUMNS,
                                        datatype=["str", "number", "str"], row_count=(0, "dynamic"),
                                        col_count=(3, "fixed"), type="array", interactive=True,
                                        label="Scorers (a row per scorer; options: `folder: refs, sharpness: 2`)",
                                        elem_id=elem("scorers"))
        with gr.Row():
            parts["scorer_mean"] = gr.Dropdown(list(_means()), value=form["scorer_mean"],
                                               label=fm.control_label("scorer_mean"), elem_id=elem("scorer_mean"))
            parts["payload_mean"] = gr.Dropdown(list(_means()), value=form["payload_mean"],
                                                label=fm.control_label("payload_mean"), elem_id=elem("payload_mean"))
        parts["normalize"] = gr.Checkbox(form["normalize"], label=fm.control_label("normalize"),
                                         elem_id=elem("normalize"))
        parts["models_dir"] = gr.Textbox(form["models_dir"], elem_id=elem("models_dir"),
                                         label=fm.control_label("models_dir",
                                                                help=f"empty: {ctx.models_dir() or 'none'}"))
        parts["toggle_manual"] = gr.Button("Rating by hand on / off (key M)", elem_id=elem("toggle_manual"))
        parts["scorer_status"] = gr.Markdown(scorer_text(ctx, form["scorers"], form["scorer_use"],
                                                         form["models_dir"]), elem_id=elem("scorer_status"))
        parts.update(problems_markdown("scorers"))
    return parts


def on_scorers(ctx: TabContext, table: Any, ticked: list[str] | None, models_dir: str) -> dict[str, Any]:
    return {"scorer_status": scorer_text(ctx, compat.table_rows(table), ticked or [], models_dir)}


def on_scorer_rows(ctx: TabContext, table: Any, ticked: list[str] | None, models_dir: str) -> dict[str, Any]:
    """The table changed: the ticks offer the scorers it names (a tick whose row went goes too)."""
    names = fm.scorer_names(compat.table_rows(table))
    kept = [n for n in ticked or [] if n in names]
    return {"scorer_use": gr.update(choices=names, value=kept), **on_scorers(ctx, table, kept, models_dir)}


def on_toggle_manual(table: Any, ticked: list[str] | None) -> dict[str, Any]:
    """The manual scorer ticked or unticked (its row added first if the table lacks it)."""
    rows = fm.filled_rows(compat.table_rows(table))
    ticked = list(ticked or [])
    if "manual" not in fm.scorer_names(rows):
        rows.append(["manual", 1.0, ""])
    ticked = [n for n in ticked if n != "manual"] if "manual" in ticked else [*ticked, "manual"]
    return {"scorers": compat.table(rows, 3),
            "scorer_use": gr.update(choices=fm.scorer_names(rows), value=ticked)}


def wire_scorers(components: Components, ctx: TabContext) -> None:
    watched = ["scorers", "scorer_use", "models_dir"]
    connect(components, "scorers", "change", bound(on_scorer_rows, ctx), watched, ["scorer_use", "scorer_status"])
    connect(components, "scorer_use", "change", bound(on_scorers, ctx), watched, ["scorer_status"])
    connect(components, "models_dir", "change", bound(on_scorers, ctx), watched, ["scorer_status"])
    connect(components, "toggle_manual", "click", on_toggle_manual, ["scorers", "scorer_use"],
            ["scorers", "scorer_use"])
