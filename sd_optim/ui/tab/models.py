"""Set-up panel 1 · Models: the checkpoints to merge, the base and loaded model, LoRAs.

The smallest panel: copy it for a new one (a builder returning its components by name, handlers
as module-level functions returning ``{name: value}``, a ``wire_*`` function binding them).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import compat
from .. import form as fm
from .context import TabContext, architectures_text, elem, model_choices, model_names
from .wiring import Components, bound, connect, on_form, problems_markdown, set_up_panel


def build_models(ctx: TabContext, form: dict[str, Any]) -> Components:
    names = [""] + model_names(ctx, form)
    parts: Components = {}
    with set_up_panel(parts, "models", open=True):
        with gr.Row():
            parts["models"] = gr.Dropdown(model_choices(ctx, form["models"]), value=form["models"],
                                          multiselect=True, label="Checkpoints to merge",
                                          elem_id=elem("models"), scale=8)
            parts["refresh_models"] = gr.Button("↻", elem_id=elem("refresh_models"), scale=1, min_width=40)
        parts["architectures"] = gr.Markdown(architectures_text(ctx, form), elem_id=elem("architectures"))
        with gr.Row():
            parts["base_model"] = gr.Dropdown(names, value=form["base_model"],
                                              label=fm.control_label("base_model"), elem_id=elem("base_model"))
            parts["host_model"] = gr.Dropdown(names, value=form["host_model"],
                                              label=fm.control_label("host_model"), elem_id=elem("host_model"),
                                              visible=ctx.standalone)
        parts["diffusers_config"] = gr.Textbox(form["diffusers_config"], visible=ctx.standalone,
                                               label=fm.control_label("diffusers_config"),
                                               elem_id=elem("diffusers_config"))
        parts["loras"] = gr.Dataframe(compat.table(form["loras"], 3), headers=fm.LORA_COLUMNS,
                                      datatype=["str", "str", "number"], row_count=(0, "dynamic"),
                                      col_count=(3, "fixed"), type="array", interactive=True,
                                      label=fm.control_label("loras"), elem_id=elem("loras"))
        parts["model_names"] = gr.State(form["model_names"])
        parts.update(problems_markdown("models"))
    return parts


def on_models(ctx: TabContext, form: dict[str, Any]) -> dict[str, Any]:
    names = [""] + model_names(ctx, form)
    base = form["base_model"] if form["base_model"] in names else ""
    host = form["host_model"] if form["host_model"] in names else ""
    return {"architectures": architectures_text(ctx, form), "base_model": gr.update(choices=names, value=base),
            "host_model": gr.update(choices=names, value=host)}


def on_refresh_models(ctx: TabContext, chosen: list[str] | None) -> dict[str, Any]:
    return {"models": gr.update(choices=model_choices(ctx, chosen or [], ctx.catalog.refresh()))}


def wire_models(components: Components, ctx: TabContext) -> None:
    connect(components, "models", "change", on_form(on_models, ctx), fm.FIELDS,
            ["architectures", "base_model", "host_model"])
    connect(components, "refresh_models", "click", bound(on_refresh_models, ctx), ["models"], ["models"])
