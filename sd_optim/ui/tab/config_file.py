"""The set-up's "Config file" panel: load a run config into every control, save the set-up as YAML."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from ...config import safe_yaml
from ...errors import ConfigError, Problem
from .. import catalog as cat
from .. import compat, views
from .. import form as fm
from ..runs import read_config
from .context import TabContext, elem, model_choices, with_all_scorers
from .wiring import Components, bound, connect, on_form

TABLE_COLUMNS = {"loras": fm.LORA_COLUMNS, "fixed": fm.FIXED_COLUMNS, "recipe_sites": fm.SITE_COLUMNS,
                 "strategies": fm.STRATEGY_COLUMNS, "bounds": fm.BOUNDS_COLUMNS, "payloads": fm.PAYLOAD_COLUMNS,
                 "scorers": fm.SCORER_COLUMNS}


def build_config_file() -> Components:
    parts: Components = {}
    with gr.Accordion("Config file", open=False, elem_id=elem("panel_file")):
        with gr.Row():
            parts["load_config"] = gr.File(file_types=[".yaml", ".yml"], label="Load a run config",
                                           elem_id=elem("load_config"))
            parts["save_config"] = gr.Button("Save the set-up as YAML", elem_id=elem("save_config"))
        parts["saved_config"] = gr.File(label="Run config", interactive=False, elem_id=elem("saved_config"))
        with gr.Row():  # an old command-line sd-optim set-up (python -m sd_optim import-config)
            parts["old_config"] = gr.File(file_types=[".yaml", ".yml"], label="Old sd-optim config.yaml",
                                          elem_id=elem("old_config"))
            parts["old_guide"] = gr.File(file_types=[".yaml", ".yml"], label="Its guide.yaml (optional)",
                                         elem_id=elem("old_guide"))
            parts["old_payloads"] = gr.File(file_types=[".yaml", ".yml"], file_count="multiple",
                                            label="Its payload files (cargo_*.yaml, cargo/*.yaml; optional)",
                                            elem_id=elem("old_payloads"))
        parts["import_old"] = gr.Button("Import the old set-up", elem_id=elem("import_old"))
        parts["file_status"] = gr.Markdown("", elem_id=elem("file_status"))
    return parts


def control_value(ctx: TabContext, key: str, value: Any) -> Any:
    """What a set-up control is given to show ``value`` (the form's value of field ``key``)."""
    if key == "models":
        return gr.update(choices=model_choices(ctx, value), value=value)
    if key == "seed":
        return str(value)
    if key in TABLE_COLUMNS:
        return compat.table(value, len(TABLE_COLUMNS[key]))
    return value


def on_load(ctx: TabContext, upload: Any) -> dict[str, Any]:
    """Every control from a config file, or the file's problems (and nothing else changed)."""
    path = compat.file_path(upload)
    if not path:
        return {"file_status": ""}
    try:
        data = safe_yaml.load(Path(path).read_text(encoding="utf-8"), "config file")
        out = set_up_from(ctx, data if isinstance(data, dict) else {})
    except (OSError, ValueError) as e:  # ConfigError and bad text are ValueErrors
        problems = e.problems if isinstance(e, ConfigError) else [Problem("config file", str(e))]
        return {"file_status": views.problems_markdown(problems)}
    out["file_status"] = f"Loaded {Path(path).name}."
    return out


def on_import_old(ctx: TabContext, config: Any, guide: Any, payloads: Any) -> dict[str, Any]:
    """Every control from an old command-line sd-optim set-up (what ``import-config`` converts),
    and what it could not carry over; its problems instead, with nothing changed."""
    from ...import_old import import_setup, payloads_from_files, read_yaml

    path = compat.file_path(config)
    if not path:
        return {"file_status": views.problems_markdown([Problem("old config", "upload the old config.yaml first")])}
    try:
        old = read_yaml(Path(path), "old config")
        old_guide = read_yaml(Path(compat.file_path(guide)), "guide") if compat.file_path(guide) else None
        files = [Path(p) for p in (compat.file_path(f) for f in (payloads or [])) if p]
        imported = import_setup(old, old_guide, payloads_from_files(files), Path(path).parent)
        out = set_up_from(ctx, imported.data)
    except ValueError as e:  # ConfigError and bad text are ValueErrors
        problems = e.problems if isinstance(e, ConfigError) else [Problem("old config", str(e))]
        return {"file_status": views.problems_markdown(problems)}
    lines = [(f"Imported {Path(path).name}: check the models' paths in panel 1 (relative ones were read from "
              "where the file was uploaded).")]
    if imported.dropped:
        lines += ["", "Not carried over:"] + [f"- `{where}`: {why}" for where, why in imported.dropped]
    out["file_status"] = "\n".join(lines)
    return out


def set_up_from(ctx: TabContext, data: dict[str, Any]) -> dict[str, Any]:
    """Every set-up control from a run config's data (a file's, or the live run's); the scorers
    not in it are listed unticked."""
    new = fm.data_to_form(data, ctx.catalog.title_for, cat.recipe_sites)
    new["scorers"] = with_all_scorers(new["scorers"], new["models_dir"] or ctx.models_dir())
    out = {key: control_value(ctx, key, new[key]) for key in fm.FIELDS}
    out["scorer_use"] = gr.update(choices=fm.scorer_names(new["scorers"]), value=new["scorer_use"])
    return out


def on_save(ctx: TabContext, form: dict[str, Any]) -> dict[str, Any]:
    data = fm.form_to_data(form, ctx.catalog.path_for)
    folder = Path(ctx.output_dir()).expanduser() / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sd-optim-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        read_config(data)
        note = f"Saved {path}."
    except ConfigError as e:
        note = f"Saved {path}; it does not validate yet:\n" + views.problems_markdown(e.problems)
    return {"saved_config": str(path), "file_status": note}


def wire_config_file(components: Components, ctx: TabContext) -> None:
    connect(components, "load_config", "upload", bound(on_load, ctx), ["load_config"], [*fm.FIELDS, "file_status"])
    connect(components, "save_config", "click", on_form(on_save, ctx), fm.FIELDS, ["saved_config", "file_status"])
    connect(components, "import_old", "click", bound(on_import_old, ctx), ["old_config", "old_guide", "old_payloads"],
            [*fm.FIELDS, "file_status"])
