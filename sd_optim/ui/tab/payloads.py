"""Set-up panel 4 · Prompt sets: one set at a time in a form (picked from a list; filled by hand or
from an image the WebUI made), a one-line summary per set, and every set as a table for copying."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from .. import compat
from .. import form as fm
from .context import TabContext, elem, first_of, with_option
from .wiring import Components, bound, connect, problem_box, problems_markdown, set_up_panel

NEW_SET = "+ new prompt set"  # the pick that starts an empty form

# the prompt-set form: component name -> the prompt set's config key
EDIT_FIELDS = {"edit_name": "name", "edit_prompt": "prompt", "edit_negative": "negative_prompt",
               "edit_sampler": "sampler", "edit_scheduler": "scheduler", "edit_seed": "seed", "edit_steps": "steps",
               "edit_cfg": "cfg_scale", "edit_width": "width", "edit_height": "height", "edit_images": "batch_size",
               "edit_weight": "weight", "edit_scorers": "scorers"}
EDITOR = ["payload_pick", *EDIT_FIELDS]  # what picking a set fills


def build_payloads(ctx: TabContext, form: dict[str, Any]) -> Components:
    parts: Components = {}
    rows = fm.filled_rows(form["payloads"])
    with set_up_panel(parts, "payloads", open=False):
        parts["payload_summary"] = gr.Markdown(summary(rows), elem_id=elem("payload_summary"))
        first = fm.payload_names(rows)[0] if rows else NEW_SET
        parts["payload_pick"] = gr.Dropdown(pick_choices(rows), value=first, label="Prompt set to edit",
                                            elem_id=elem("payload_pick"))
        parts.update(_editor(ctx, fm.scorer_names(form["scorers"]), _values(rows, first)))
        with gr.Row():
            parts["save_payload"] = gr.Button("Save this prompt set", variant="primary",
                                              elem_id=elem("save_payload"))
            parts["remove_payload"] = gr.Button("Remove it", elem_id=elem("remove_payload"))
        with gr.Accordion("Every prompt set as a table", open=False, elem_id=elem("payload_table_panel")):
            parts["payloads"] = gr.Dataframe(compat.table(rows, 13), headers=fm.PAYLOAD_COLUMNS,
                                             datatype=["str", "str", "str", "number", "number", "number", "str",
                                                       "str", "number", "number", "number", "number", "str"],
                                             row_count=(0, "dynamic"), col_count=(13, "fixed"), type="array",
                                             interactive=True, wrap=True, label="Prompt sets (scorers: empty for all)",
                                             elem_id=elem("payloads"))
        parts["wildcards_dir"] = gr.Textbox(form["wildcards_dir"], label=fm.control_label("wildcards_dir"),
                                            elem_id=elem("wildcards_dir"))
        parts.update(problems_markdown("payloads"))
    return parts


def _editor(ctx: TabContext, scorers: list[str], values: dict[str, Any]) -> Components:
    """The form of one prompt set, showing ``values``."""
    shown = _field_values(ctx, scorers, values)
    parts: Components = {}
    parts["edit_name"] = gr.Textbox(label="Name", elem_id=elem("edit_name"), **shown["edit_name"])
    parts["edit_prompt"] = gr.Textbox(label="Prompt (wildcards: __name__)", lines=2, elem_id=elem("edit_prompt"),
                                      **shown["edit_prompt"])
    parts["edit_negative"] = gr.Textbox(label="Negative prompt", elem_id=elem("edit_negative"),
                                        **shown["edit_negative"])
    with gr.Row():
        parts["edit_sampler"] = gr.Dropdown(label="Sampler", elem_id=elem("edit_sampler"), **shown["edit_sampler"])
        parts["edit_scheduler"] = gr.Dropdown(label="Schedule type", elem_id=elem("edit_scheduler"),
                                              **shown["edit_scheduler"])
    with gr.Row():
        for name, label in (("edit_seed", "Seed"), ("edit_steps", "Steps"), ("edit_cfg", "CFG scale")):
            parts[name] = gr.Number(label=label, precision=None if name == "edit_cfg" else 0, elem_id=elem(name),
                                    **shown[name])
    with gr.Row():
        for name, label in (("edit_width", "Width"), ("edit_height", "Height"), ("edit_images", "Images"),
                            ("edit_weight", "Weight")):
            parts[name] = gr.Number(label=label, precision=None if name == "edit_weight" else 0, elem_id=elem(name),
                                    **shown[name])
    parts["edit_scorers"] = gr.CheckboxGroup(label="Scorers of this set (none ticked: every scorer in use)",
                                             elem_id=elem("edit_scorers"), **shown["edit_scorers"])
    parts["png"] = gr.File(file_types=[".png", ".jpg", ".jpeg", ".webp"],
                           label="Drop an image made by the WebUI: its parameters fill the form", elem_id=elem("png"))
    return parts


def summary(rows: list[list[Any]]) -> str:
    """One line per prompt set: its name, prompt, size, steps, sampler and number of images."""
    if not rows:
        return "No prompt set yet: fill in the form below and press **Save this prompt set**."
    lines = []
    for row in rows:
        v = fm.payload_values(row)
        prompt = str(v["prompt"] or "")
        prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
        lines.append(f"- **{v['name']}** · {prompt} · {_cell(v['width'])}×{_cell(v['height'])} · "
                     f"{_cell(v['steps'])} steps · {_cell(v['sampler']) or 'default sampler'} · "
                     f"{_cell(v['batch_size'])} image(s)")
    return "\n".join(lines)


def _cell(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


def pick_choices(rows: list[list[Any]]) -> list[str]:
    return [*fm.payload_names(rows), NEW_SET]


def _values(rows: list[list[Any]], name: str) -> dict[str, Any]:
    """The picked set's values; a new set's defaults (under a free name) for ``NEW_SET``."""
    for row, row_name in zip(rows, fm.payload_names(rows)):
        if row_name == name:
            return fm.payload_values(row)
    return fm.payload_defaults(fm.free_payload_name(rows))


def _field_values(ctx: TabContext, scorers: list[str], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each component of the form is given to show ``values`` (``value``, and the
    ``choices`` of the lists, which offer the value they show): a builder's keyword arguments."""
    out = {name: {"value": values.get(key)} for name, key in EDIT_FIELDS.items()}
    for name, offered in (("edit_sampler", ctx.samplers()), ("edit_scheduler", ctx.schedulers())):
        shown = values.get(EDIT_FIELDS[name]) or first_of(offered, "")
        out[name] = {"value": shown, "choices": with_option(offered, shown) if shown else offered}
    chosen = list(values.get("scorers") or [])
    out["edit_scorers"] = {"value": chosen, "choices": [*scorers, *(s for s in chosen if s not in scorers)]}
    return out


def on_pick(ctx: TabContext, picked: str, table: Any, scorer_table: Any) -> dict[str, Any]:
    """A set picked from the list: its values into the form (a new set's defaults for ``NEW_SET``)."""
    rows = fm.filled_rows(compat.table_rows(table))
    scorers = fm.scorer_names(compat.table_rows(scorer_table))
    shown = _field_values(ctx, scorers, _values(rows, picked))
    return {**{name: gr.update(**given) for name, given in shown.items()}, problem_box("payloads"): ""}


def on_payload_rows(ctx: TabContext, table: Any, picked: str, scorer_table: Any) -> dict[str, Any]:
    """The table changed (saved, removed, loaded, edited): the summary and the list follow; a pick
    whose set went moves to the first set, and the form shows it."""
    rows = fm.filled_rows(compat.table_rows(table))
    out: dict[str, Any] = {"payload_summary": summary(rows)}
    if picked in fm.payload_names(rows) or (picked == NEW_SET and rows):
        out["payload_pick"] = gr.update(choices=pick_choices(rows))
        return out
    first = fm.payload_names(rows)[0] if rows else NEW_SET
    out.update(on_pick(ctx, first, rows, scorer_table))
    out["payload_pick"] = gr.update(choices=pick_choices(rows), value=first)
    return out


def on_save(table: Any, *fields: Any) -> dict[str, Any]:
    """The form saved as the set of its name (replacing it) or as a new set after the others."""
    values = dict(zip(EDIT_FIELDS.values(), fields))
    rows = fm.filled_rows(compat.table_rows(table))
    name = str(values["name"] or "").strip() or fm.free_payload_name(rows)
    values.update(name=name, scorers=list(values["scorers"] or []))
    new = fm.payload_row({**fm.payload_defaults(), **{k: v for k, v in values.items() if v is not None}})
    names = fm.payload_names(rows)
    if name in names:
        rows[names.index(name)] = new
    else:
        rows.append(new)
    return {"payloads": compat.table(rows, 13), "edit_name": name,
            "payload_pick": gr.update(choices=pick_choices(rows), value=name), problem_box("payloads"): ""}


def on_remove(ctx: TabContext, table: Any, name: str, scorer_table: Any) -> dict[str, Any]:
    """The set named in the form removed; the form shows the first set left."""
    rows = fm.filled_rows(compat.table_rows(table))
    rows = [r for r, row_name in zip(rows, fm.payload_names(rows)) if row_name != str(name or "").strip()]
    first = fm.payload_names(rows)[0] if rows else NEW_SET
    return {"payloads": compat.table(rows, 13), **on_pick(ctx, first, rows, scorer_table),
            "payload_pick": gr.update(choices=pick_choices(rows), value=first)}


def on_png(ctx: TabContext, upload: Any, table: Any) -> dict[str, Any]:
    """An image's generation parameters into the form, as a new set (Save adds it)."""
    from ..infotext import prompt_set_from_png

    path = compat.file_path(upload)
    if not path:
        return {problem_box("payloads"): ""}
    try:
        found = prompt_set_from_png(path)
    except (OSError, ValueError) as e:
        return {problem_box("payloads"): f"- ⚠ payloads: {e}"}
    out: dict[str, Any] = {name: found[key] for name, key in EDIT_FIELDS.items() if key in found}
    out.update(edit_name=fm.free_payload_name(compat.table_rows(table)), edit_negative=found.get("negative_prompt", ""),
               edit_images=1, payload_pick=NEW_SET)
    if "sampler" in found:
        out["edit_sampler"] = gr.update(value=found["sampler"], choices=with_option(ctx.samplers(), found["sampler"]))
    if "scheduler" in found:
        out["edit_scheduler"] = gr.update(value=found["scheduler"],
                                          choices=with_option(ctx.schedulers(), found["scheduler"]))
    out[problem_box("payloads")] = ""
    return out


def on_scorers_for_sets(table: Any, ticked: list[str] | None) -> dict[str, Any]:
    """The scorer table changed: a set's scorer ticks offer the scorers it names."""
    names = fm.scorer_names(compat.table_rows(table))
    kept = list(ticked or [])
    return {"edit_scorers": gr.update(choices=[*names, *(s for s in kept if s not in names)], value=kept)}


def wire_payloads(components: Components, ctx: TabContext) -> None:
    problems = problem_box("payloads")
    connect(components, "payload_pick", "input", bound(on_pick, ctx), ["payload_pick", "payloads", "scorers"],
            [*EDIT_FIELDS, problems])
    connect(components, "payloads", "change", bound(on_payload_rows, ctx), ["payloads", "payload_pick", "scorers"],
            ["payload_summary", *EDITOR, problems])
    connect(components, "save_payload", "click", on_save, ["payloads", *EDIT_FIELDS],
            ["payloads", "edit_name", "payload_pick", problems])
    connect(components, "remove_payload", "click", bound(on_remove, ctx), ["payloads", "edit_name", "scorers"],
            ["payloads", *EDITOR, problems])
    connect(components, "png", "upload", bound(on_png, ctx), ["png", "payloads"],
            [*EDIT_FIELDS, "payload_pick", problems])
    connect(components, "scorers", "change", on_scorers_for_sets, ["scorers", "edit_scorers"], ["edit_scorers"])
