"""Set-up panel 2 · Merge method or recipe: the method and its fixed values, or a recipe file and
which of its hyperparameters to tune."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from ...config import MERGE_PRECISIONS
from .. import catalog as cat
from .. import compat
from .. import form as fm
from .context import TabContext, elem, method_info, recipe_files
from .wiring import Components, bound, connect, problem_box, problems_markdown, set_up_panel


def _methods() -> list[str]:
    from ...search.methods import list_methods

    return list_methods()


def build_mode(ctx: TabContext, form: dict[str, Any]) -> Components:
    rows, text = method_info(form["method"])
    parts: Components = {}
    with set_up_panel(parts, "mode", open=True):
        with gr.Row():
            parts["mode"] = gr.Radio(["merge", "recipe"], value=form["mode"], label=fm.control_label("mode"),
                                     elem_id=elem("mode"))
            parts["merge_precision"] = gr.Radio(list(MERGE_PRECISIONS), value=form["merge_precision"],
                                                label=fm.control_label("merge_precision"),
                                                elem_id=elem("merge_precision"))
        with gr.Group(visible=form["mode"] == "merge") as parts["merge_group"]:
            parts["method"] = gr.Dropdown(_methods(), value=form["method"], label=fm.control_label("method"),
                                          elem_id=elem("method"))
            parts["method_info"] = gr.Markdown(text, elem_id=elem("method_info"))
            parts["hypers"] = gr.Dataframe(compat.table(rows, 3), headers=["hyperparameter", "type", "default"],
                                           interactive=False, type="array", label="Its hyperparameters",
                                           elem_id=elem("hypers"))
            parts["fixed"] = gr.Dataframe(compat.table(form["fixed"], 2), headers=fm.FIXED_COLUMNS,
                                          datatype=["str", "str"], row_count=(0, "dynamic"),
                                          col_count=(2, "fixed"), type="array", interactive=True,
                                          label=fm.control_label("fixed"), elem_id=elem("fixed"))
        with gr.Group(visible=form["mode"] == "recipe") as parts["recipe_group"]:
            with gr.Row():
                parts["recipe_path"] = gr.Dropdown(recipe_files(ctx), value=form["recipe_path"],
                                                   allow_custom_value=True, label=fm.control_label("recipe_path"),
                                                   elem_id=elem("recipe_path"), scale=4)
                parts["recipe_upload"] = gr.File(file_types=[".mecha"], label="or upload one",
                                                 elem_id=elem("recipe_upload"), scale=2)
            parts["recipe_sites"] = gr.Dataframe(compat.table(form["recipe_sites"], 5), headers=fm.SITE_COLUMNS,
                                                 datatype=["str", "number", "bool", "number", "number"],
                                                 row_count=(0, "dynamic"), col_count=(5, "fixed"), type="array",
                                                 interactive=True, label="Its tunable hyperparameters",
                                                 elem_id=elem("recipe_sites"))
            with gr.Row():
                parts["recipe_include"] = gr.Textbox(form["recipe_include"], label=fm.control_label("recipe_include"),
                                                     elem_id=elem("recipe_include"))
                parts["recipe_exclude"] = gr.Textbox(form["recipe_exclude"], label=fm.control_label("recipe_exclude"),
                                                     elem_id=elem("recipe_exclude"))
        parts.update(problems_markdown("mode"))
    return parts


def on_mode(mode: str) -> dict[str, Any]:
    return {"merge_group": gr.update(visible=mode == "merge"), "recipe_group": gr.update(visible=mode == "recipe")}


def on_method(method: str) -> dict[str, Any]:
    rows, text = method_info(method)
    return {"hypers": gr.update(value=compat.table(rows, 3)), "method_info": text}


def on_recipe_path(path: str | None, table: Any, include: str, exclude: str) -> dict[str, Any]:
    """The recipe's tunable sites; rows the table already has for them (a loaded config's ticks
    and bounds) stay."""
    empty = gr.update(value=compat.table([], 5))
    if not path:
        return {"recipe_sites": empty, problem_box("mode"): ""}
    try:
        sites = cat.recipe_sites(str(path))
    except (OSError, ValueError) as e:
        return {"recipe_sites": empty, problem_box("mode"): f"- ⚠ recipe.path: {e}"}
    known = {str(r[0]): r for r in fm.filled_rows(compat.table_rows(table))}
    tuned = set(fm.selected_sites([name for name, _ in sites], fm.words(include) or ["*"], fm.words(exclude)))
    rows = [[name, value, *(known[name][2:5] if name in known else [name in tuned, "", ""])]
            for name, value in sites]
    return {"recipe_sites": gr.update(value=compat.table(rows, 5)), problem_box("mode"): ""}


def on_patterns(table: Any, include: str, exclude: str) -> dict[str, Any]:
    rows = fm.filled_rows(compat.table_rows(table))
    if not rows:
        return {"recipe_sites": gr.update()}
    tuned = set(fm.selected_sites([str(r[0]) for r in rows], fm.words(include) or ["*"], fm.words(exclude)))
    return {"recipe_sites": compat.table([[r[0], r[1], str(r[0]) in tuned, *r[3:5]] for r in rows], 5)}


def on_recipe_upload(ctx: TabContext, upload: Any) -> dict[str, Any]:
    path = compat.file_path(upload)
    if not path:
        return {"recipe_path": gr.update()}
    target = Path(ctx.output_dir()).expanduser() / "recipes" / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)  # the upload's temp file goes away with the session
    return {"recipe_path": gr.update(choices=recipe_files(ctx), value=str(target))}


def wire_mode(components: Components, ctx: TabContext) -> None:
    connect(components, "mode", "change", on_mode, ["mode"], ["merge_group", "recipe_group"])
    connect(components, "method", "change", on_method, ["method"], ["hypers", "method_info"])
    connect(components, "recipe_path", "change", on_recipe_path,
            ["recipe_path", "recipe_sites", "recipe_include", "recipe_exclude"],
            ["recipe_sites", problem_box("mode")])
    for key in ("recipe_include", "recipe_exclude"):
        connect(components, key, "change", on_patterns, ["recipe_sites", "recipe_include", "recipe_exclude"],
                ["recipe_sites"])
    connect(components, "recipe_upload", "upload", bound(on_recipe_upload, ctx), ["recipe_upload"],
            ["recipe_path"])
