"""Set-up panel 4 · Prompt sets: the table, and adding a set by hand or from an image the WebUI made."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import compat
from .. import form as fm
from .context import TabContext, elem, first_of, with_option
from .wiring import Components, bound, connect, problem_box, problems_markdown, set_up_panel

# the add-a-prompt-set fields: component name -> the prompt set's config key
ADD_FIELDS = {"add_prompt": "prompt", "add_negative": "negative_prompt", "add_sampler": "sampler",
              "add_scheduler": "scheduler", "add_seed": "seed", "add_steps": "steps", "add_cfg": "cfg_scale",
              "add_width": "width", "add_height": "height", "add_images": "batch_size"}


def build_payloads(ctx: TabContext, form: dict[str, Any]) -> Components:
    parts: Components = {}
    with set_up_panel(parts, "payloads", open=False):
        parts["payloads"] = gr.Dataframe(compat.table(form["payloads"], 13), headers=fm.PAYLOAD_COLUMNS,
                                         datatype=["str", "str", "str", "number", "number", "number", "str",
                                                   "str", "number", "number", "number", "number", "str"],
                                         row_count=(0, "dynamic"), col_count=(13, "fixed"), type="array",
                                         interactive=True, wrap=True,
                                         label="Prompt sets (scorers: empty for all)", elem_id=elem("payloads"))
        with gr.Accordion("Add a prompt set", open=False, elem_id=elem("add_payload_panel")):
            parts.update(_add_fields(ctx))
        parts["wildcards_dir"] = gr.Textbox(form["wildcards_dir"], label=fm.control_label("wildcards_dir"),
                                            elem_id=elem("wildcards_dir"))
        parts.update(problems_markdown("payloads"))
    return parts


def _add_fields(ctx: TabContext) -> Components:
    new = fm.payload_defaults()
    samplers, schedulers = ctx.samplers(), ctx.schedulers()
    parts: Components = {}
    parts["png"] = gr.File(file_types=[".png", ".jpg", ".jpeg", ".webp"],
                           label="Drop an image made by the WebUI: its parameters fill the fields", elem_id=elem("png"))
    parts["add_prompt"] = gr.Textbox(new["prompt"], label="Prompt", lines=2, elem_id=elem("add_prompt"))
    parts["add_negative"] = gr.Textbox(new["negative_prompt"], label="Negative prompt", elem_id=elem("add_negative"))
    with gr.Row():
        parts["add_sampler"] = gr.Dropdown(samplers, value=first_of(samplers, new["sampler"]), label="Sampler",
                                           elem_id=elem("add_sampler"))
        parts["add_scheduler"] = gr.Dropdown(schedulers, value=first_of(schedulers, new["scheduler"]),
                                             label="Schedule type", elem_id=elem("add_scheduler"))
    with gr.Row():
        parts["add_seed"] = gr.Number(new["seed"], precision=0, label="Seed", elem_id=elem("add_seed"))
        parts["add_steps"] = gr.Number(new["steps"], precision=0, label="Steps", elem_id=elem("add_steps"))
        parts["add_cfg"] = gr.Number(new["cfg_scale"], label="CFG scale", elem_id=elem("add_cfg"))
        parts["add_width"] = gr.Number(new["width"], precision=0, label="Width", elem_id=elem("add_width"))
        parts["add_height"] = gr.Number(new["height"], precision=0, label="Height", elem_id=elem("add_height"))
        parts["add_images"] = gr.Number(new["batch_size"], precision=0, label="Images", elem_id=elem("add_images"))
    parts["add_payload"] = gr.Button("Add to the prompt sets", elem_id=elem("add_payload"))
    return parts


def on_png(ctx: TabContext, upload: Any) -> dict[str, Any]:
    """An image's generation parameters into the add-a-prompt-set fields."""
    from ..infotext import prompt_set_from_png

    path = compat.file_path(upload)
    if not path:
        return {problem_box("payloads"): ""}
    try:
        found = prompt_set_from_png(path)
    except (OSError, ValueError) as e:
        return {problem_box("payloads"): f"- ⚠ payloads: {e}"}
    out: dict[str, Any] = {name: found[key] for name, key in ADD_FIELDS.items() if key in found}
    out["add_negative"] = found.get("negative_prompt", "")
    out["add_images"] = 1
    if "sampler" in found:
        out["add_sampler"] = gr.update(value=found["sampler"], choices=with_option(ctx.samplers(), found["sampler"]))
    if "scheduler" in found:
        out["add_scheduler"] = gr.update(value=found["scheduler"],
                                         choices=with_option(ctx.schedulers(), found["scheduler"]))
    out[problem_box("payloads")] = ""
    return out


def on_add(table: Any, prompt: str, negative: str, sampler: str, scheduler: str, seed: Any, steps: Any,
           cfg: Any, width: Any, height: Any, images: Any) -> dict[str, Any]:
    """The add-a-prompt-set fields as a new row, named ``set<N>`` after the others."""
    rows = fm.filled_rows(compat.table_rows(table))
    names = {str(r[0]) for r in rows}
    n = len(rows)
    while f"set{n}" in names:
        n += 1
    new = fm.payload_defaults(f"set{n}", prompt or "")
    new.update(negative_prompt=negative or "", sampler=sampler or "", scheduler=scheduler or "", seed=seed,
               steps=steps, cfg_scale=cfg, width=width, height=height, batch_size=images)
    rows.append(fm.payload_row(new))
    return {"payloads": rows}


def wire_payloads(components: Components, ctx: TabContext) -> None:
    connect(components, "png", "upload", bound(on_png, ctx), ["png"], [*ADD_FIELDS, problem_box("payloads")])
    connect(components, "add_payload", "click", on_add, ["payloads", *ADD_FIELDS], ["payloads"])
