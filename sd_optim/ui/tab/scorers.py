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
        parts["scorers"] = gr.Dataframe(compat.table(form["scorers"], 4), headers=fm.SCORER_COLUMNS,
                                        datatype=["str", "bool", "number", "str"], row_count=(0, "dynamic"),
                                        col_count=(4, "fixed"), type="array", interactive=True,
                                        label="Scorers (tick the ones to use; options: `folder: refs, sharpness: 2`)",
                                        elem_id=elem("scorers"))
        with gr.Row():
            parts["scorer_mean"] = gr.Dropdown(list(_means()), value=form["scorer_mean"],
                                               label=fm.control_label("scorer_mean"), elem_id=elem("scorer_mean"))
            parts["payload_mean"] = gr.Dropdown(list(_means()), value=form["payload_mean"],
                                                label=fm.control_label("payload_mean"), elem_id=elem("payload_mean"))
        parts["models_dir"] = gr.Textbox(form["models_dir"], elem_id=elem("models_dir"),
                                         label=fm.control_label("models_dir",
                                                                help=f"empty: {ctx.models_dir() or 'none'}"))
        parts["toggle_manual"] = gr.Button("Rating by hand on / off (key M)", elem_id=elem("toggle_manual"))
        parts["scorer_status"] = gr.Markdown(scorer_text(ctx, form["scorers"], form["models_dir"]),
                                             elem_id=elem("scorer_status"))
        parts.update(problems_markdown("scorers"))
    return parts


def on_scorers(ctx: TabContext, table: Any, models_dir: str) -> dict[str, Any]:
    return {"scorer_status": scorer_text(ctx, compat.table_rows(table), models_dir)}


def on_toggle_manual(table: Any) -> dict[str, Any]:
    """The manual scorer ticked or unticked (added first if the table lacks it)."""
    rows = fm.filled_rows(compat.table_rows(table))
    if not any(str(r[0]) == "manual" for r in rows):
        rows.append(["manual", False, 1.0, ""])
    rows = [[r[0], not fm.is_ticked(r[1]) if str(r[0]) == "manual" else r[1], *r[2:]] for r in rows]
    return {"scorers": compat.table(rows, 4)}


def wire_scorers(components: Components, ctx: TabContext) -> None:
    connect(components, "scorers", "change", bound(on_scorers, ctx), ["scorers", "models_dir"], ["scorer_status"])
    connect(components, "toggle_manual", "click", on_toggle_manual, ["scorers"], ["scorers"])
    connect(components, "models_dir", "change", bound(on_scorers, ctx), ["scorers", "models_dir"],
            ["scorer_status"])
