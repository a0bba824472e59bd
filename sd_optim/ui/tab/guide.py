"""Set-up panel 3 · What to tune (guide): the strategies, the bounds, the block config, the preview of
the parameters the search will tune, and the guide's YAML view."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ...config import STRATEGIES, safe_yaml
from ...errors import ConfigError
from ...search.blocks import components as model_components
from .. import compat, views
from .. import form as fm
from .context import TabContext, elem, model_config, preview
from .wiring import Components, connect, on_form, problem_box, problems_markdown, set_up_panel

STRATEGY_HELP = (
    "One row per strategy: pick a component, a strategy and its items under the table and press "
    "**Add this strategy**, "
    "then fill in the other cells the strategy needs. **component**: diffuser, clip_l, clip_g, vae (see the preview). "
    "**strategy**: `all` (one parameter per block or key), `select` (only the blocks matching "
    "*patterns*), `group` (one parameter per named group: `in: IN*; out: OUT*`), `single` (one "
    "parameter for the whole component), `none` (hold it fixed). **items**: blocks or keys. "
    "**params**: which hyperparameters (default: all of the method's). **fixed** (none only): "
    "`alpha=0.5`.")
BOUNDS_HELP = ("Ranges per hyperparameter (`alpha`) or per generated parameter "
               "(`diffuser.IN04.alpha`); a **fixed** value holds it. Empty cells: defaults ([0, 1]).")

BLOCKS_HELP = ("empty: the model's supermerger blocks; shipped: sd1-fine, sd1-attn_resnet, sd1-resolution "
               "and the same for sdxl")

# what a strategy's parameters stand for: its component's blocks where it has a block config (the
# default), or its keys
ITEMS = ("default", "blocks", "keys")

# the controls whose change changes the preview and the YAML view
PREVIEWED = ("models", "mode", "method", "fixed", "strategies", "bounds", "blocks", "blocks_dir", "recipe_path",
             "recipe_sites", "recipe_include", "recipe_exclude", "base_model")


def build_guide(ctx: TabContext, form: dict[str, Any]) -> Components:
    first_preview, first_yaml = preview(ctx, form)
    parts: Components = {}
    with set_up_panel(parts, "guide", open=True):
        gr.Markdown(STRATEGY_HELP, elem_classes=[elem("help")])
        parts["strategies"] = gr.Dataframe(compat.table(form["strategies"], 7), headers=fm.STRATEGY_COLUMNS,
                                           datatype=["str"] * 7, row_count=(0, "dynamic"), col_count=(7, "fixed"),
                                           type="array", interactive=True, label="Strategies",
                                           elem_id=elem("strategies"))
        with gr.Row(elem_id=elem("add_strategy_bar")):
            choices = component_choices(ctx, form)
            parts["add_component"] = gr.Dropdown(choices, value=choices[0], label="Component",
                                                 elem_id=elem("add_component"))
            parts["add_strategy"] = gr.Dropdown(list(STRATEGIES), value=STRATEGIES[0], label="Strategy",
                                                elem_id=elem("add_strategy"))
            parts["add_items"] = gr.Dropdown(list(ITEMS), value=ITEMS[0], label="Items", elem_id=elem("add_items"))
            parts["add_strategy_row"] = gr.Button("Add this strategy", elem_id=elem("add_strategy_row"))
        gr.Markdown(BOUNDS_HELP, elem_classes=[elem("help")])
        parts["bounds"] = gr.Dataframe(compat.table(form["bounds"], 7), headers=fm.BOUNDS_COLUMNS,
                                       datatype=["str", "number", "number", "bool", "number", "str", "str"],
                                       row_count=(0, "dynamic"), col_count=(7, "fixed"), type="array",
                                       interactive=True, label="Bounds", elem_id=elem("bounds"))
        with gr.Row():
            parts["blocks"] = gr.Textbox(form["blocks"], label=fm.control_label("blocks", help=BLOCKS_HELP),
                                         elem_id=elem("blocks"))
            parts["blocks_dir"] = gr.Textbox(form["blocks_dir"], label=fm.control_label("blocks_dir"),
                                             elem_id=elem("blocks_dir"))
        parts["preview"] = gr.Markdown(first_preview, elem_id=elem("preview"))
        with gr.Accordion("YAML view", open=False, elem_id=elem("guide_yaml_panel")):
            parts["guide_yaml"] = gr.Code(first_yaml, language="yaml", label="guide (edit, then Apply)",
                                          elem_id=elem("guide_yaml"))
            parts["apply_guide_yaml"] = gr.Button("Apply YAML", elem_id=elem("apply_guide_yaml"))
        parts.update(problems_markdown("guide"))
    return parts


def component_choices(ctx: TabContext, form: dict[str, Any]) -> list[str]:
    """The components a strategy can name: those of the chosen checkpoints' architecture."""
    config = model_config(ctx, form)
    return model_components(config) if config else ["diffuser", "clip_l"]


def on_models_for_strategies(ctx: TabContext, form: dict[str, Any]) -> dict[str, Any]:
    choices = component_choices(ctx, form)
    return {"add_component": gr.update(choices=choices, value=choices[0])}


def on_add_strategy(component: str | None, strategy: str | None, items: str | None, rows: Any) -> dict[str, Any]:
    """A strategy picked from the lists, added as a row of the table (its other cells empty)."""
    if not component or not strategy:
        return {}
    items = "" if items in (None, ITEMS[0]) else items
    new = [*fm.filled_rows(rows), [component, strategy, items, "", "", "", ""]]
    return {"strategies": compat.table(new, len(fm.STRATEGY_COLUMNS))}


def on_preview(ctx: TabContext, form: dict[str, Any]) -> dict[str, Any]:
    markdown, guide_yaml = preview(ctx, form)
    return {"preview": markdown, "guide_yaml": guide_yaml}


def on_apply_yaml(text: str | None) -> dict[str, Any]:
    """The YAML view's guide back into the tables (or its problems under the panel)."""
    try:
        guide = safe_yaml.load(text or "", "guide") or {}
        if isinstance(guide, dict) and set(guide) == {"guide"}:
            guide = guide["guide"]
        new = fm.guide_to_form(guide)
    except ConfigError as e:
        return {problem_box("guide"): views.problems_markdown(e.problems)}
    return {"strategies": compat.table(new["strategies"], 7), "bounds": compat.table(new["bounds"], 7),
            "blocks": new["blocks"], "recipe_include": new["recipe_include"],
            "recipe_exclude": new["recipe_exclude"], problem_box("guide"): ""}


def wire_guide(components: Components, ctx: TabContext) -> None:
    for key in PREVIEWED:
        connect(components, key, "change", on_form(on_preview, ctx), fm.FIELDS, ["preview", "guide_yaml"])
    connect(components, "models", "change", on_form(on_models_for_strategies, ctx), fm.FIELDS, ["add_component"])
    connect(components, "add_strategy_row", "click", on_add_strategy,
            ["add_component", "add_strategy", "add_items", "strategies"], ["strategies"])
    connect(components, "apply_guide_yaml", "click", on_apply_yaml, ["guide_yaml"],
            ["strategies", "bounds", "blocks", "recipe_include", "recipe_exclude", problem_box("guide")])
