"""Set-up panel 5 · Scorers: which scorers, their weights and options, how scores are averaged, and
whether each scorer finds what it needs; what each measures, and downloading their weights."""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from ...errors import ConfigError
from ...scoring import ScorerError
from ...scoring.download import download_scorer
from .. import catalog as cat
from .. import compat
from .. import form as fm
from .context import TabContext, elem, scorer_text, with_all_scorers
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
        with gr.Row():
            parts["normalize"] = gr.Checkbox(form["normalize"], label=fm.control_label("normalize"),
                                             elem_id=elem("normalize"))
            parts["vram_gb"] = gr.Number(form["vram_gb"], label=fm.control_label("vram_gb"), elem_id=elem("vram_gb"))
        parts["objectives"] = gr.Textbox(form["objectives"], lines=2, label=fm.control_label("objectives"),
                                         placeholder="aesthetic: laion_aesthetic\nadherence: clip_score, pickscore",
                                         elem_id=elem("objectives"))
        parts["models_dir"] = gr.Textbox(form["models_dir"], elem_id=elem("models_dir"),
                                         label=fm.control_label("models_dir",
                                                                help=f"empty: {ctx.models_dir() or 'none'}"))
        parts["toggle_manual"] = gr.Button("Rating by hand on / off (key M)", elem_id=elem("toggle_manual"))
        parts.update(_downloads(ctx, form["models_dir"]))
        parts["scorer_status"] = gr.Markdown(scorer_text(ctx, form["scorers"], form["scorer_use"],
                                                         form["models_dir"]), elem_id=elem("scorer_status"))
        parts.update(problems_markdown("scorers"))
    return parts


def _downloads(ctx: TabContext, models_dir: str) -> Components:
    """What each scorer measures and whether its files are there; Download for those missing."""
    guide, fetchable = cat.scorer_guide(models_dir or ctx.models_dir())
    parts: Components = {}
    with gr.Accordion("What each scorer measures · download weights", open=False, elem_id=elem("scorer_guide_panel")):
        parts["scorer_guide"] = gr.Markdown(guide, elem_id=elem("scorer_guide"))
        with gr.Row():
            parts["download_scorer"] = gr.Dropdown(fetchable, value=fetchable[0] if fetchable else None,
                                                   label="Scorer whose files to download", elem_id=elem("download_scorer"))
            parts["download"] = gr.Button("Download", elem_id=elem("download"))
        parts["download_status"] = gr.Markdown("", elem_id=elem("download_status"))
    return parts


def on_scorers(ctx: TabContext, table: Any, ticked: list[str] | None, models_dir: str) -> dict[str, Any]:
    return {"scorer_status": scorer_text(ctx, compat.table_rows(table), ticked or [], models_dir)}


def on_scorer_rows(ctx: TabContext, table: Any, ticked: list[str] | None, models_dir: str) -> dict[str, Any]:
    """The table changed: the ticks offer the scorers it names (a tick whose row went goes too).
    The ticks themselves are sent only when one goes: this answer may arrive after a later tick
    (key M pressed twice), which a stale value would undo."""
    names = fm.scorer_names(compat.table_rows(table))
    kept = [n for n in ticked or [] if n in names]
    ticks = gr.update(choices=names, value=kept) if kept != list(ticked or []) else gr.update(choices=names)
    return {"scorer_use": ticks, **on_scorers(ctx, table, kept, models_dir)}


def on_toggle_manual(table: Any, ticked: list[str] | None) -> dict[str, Any]:
    """The manual scorer ticked or unticked (its row added first if the table lacks it)."""
    rows = fm.filled_rows(compat.table_rows(table))
    ticked = list(ticked or [])
    table_update = gr.update()  # the table is sent only when it gains the row (its change re-reads the ticks)
    if "manual" not in fm.scorer_names(rows):
        rows.append(["manual", 1.0, ""])
        table_update = compat.table(rows, 3)
    ticked = [n for n in ticked if n != "manual"] if "manual" in ticked else [*ticked, "manual"]
    return {"scorers": table_update, "scorer_use": gr.update(choices=fm.scorer_names(rows), value=ticked)}


def on_models_dir(ctx: TabContext, models_dir: str) -> dict[str, Any]:
    """The scorer guide for the folder now named (and what can be downloaded into it)."""
    guide, fetchable = cat.scorer_guide(models_dir or ctx.models_dir())
    return {"scorer_guide": guide,
            "download_scorer": gr.update(choices=fetchable, value=fetchable[0] if fetchable else None)}


def on_download(ctx: TabContext, name: str | None, models_dir: str, table: Any, ticked: list[str] | None):
    """The files of scorer ``name`` fetched into the scorer models folder, the progress shown as it
    goes; then the guide and the ticked scorers' readiness again."""
    folder = models_dir or ctx.models_dir()
    if not name:
        yield {"download_status": "Nothing to download: every scorer has its files."}
        return
    done: dict[str, Any] = {}
    worker = threading.Thread(target=_fetch, args=(name, folder, done), daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_EVERY)
        if "progress" in done:
            file, got, total = done["progress"]
            shown = f"{got / total:.0%} of {total / 1e6:.1f} MB" if total else f"{got / 1e6:.1f} MB"
            yield {"download_status": f"Downloading {name}: {file} {shown}…"}
    status = f"⚠ {done['error']}" if "error" in done else \
        f"Downloaded {name}: " + (", ".join(f"`{p}`" for p in done["paths"]) or "no files needed")
    rows = compat.table_rows(table)
    offered = with_all_scorers(rows, folder)  # a scorer offered once installed joins the table
    yield {"download_status": status, **on_models_dir(ctx, models_dir),
           **on_scorers(ctx, table, ticked, models_dir),
           **({"scorers": compat.table(offered, 3)} if len(offered) > len(rows) else {})}


PROGRESS_EVERY = 0.5  # seconds between progress updates


def _fetch(name: str, folder: str, done: dict[str, Any]) -> None:
    """Run in a thread: ``done`` gets ``progress`` as it goes, then ``paths`` or ``error``."""
    try:
        paths = download_scorer(name, folder, progress=lambda *p: done.__setitem__("progress", p))
        done["paths"] = [str(p) for p in paths]
    except (ScorerError, ConfigError, OSError) as e:
        done["error"] = "; ".join(e.problems) if isinstance(e, ConfigError) else str(e)


def wire_scorers(components: Components, ctx: TabContext) -> None:
    watched = ["scorers", "scorer_use", "models_dir"]
    connect(components, "scorers", "change", bound(on_scorer_rows, ctx), watched, ["scorer_use", "scorer_status"])
    connect(components, "scorer_use", "change", bound(on_scorers, ctx), watched, ["scorer_status"])
    connect(components, "models_dir", "change", bound(on_scorers, ctx), watched, ["scorer_status"])
    connect(components, "models_dir", "change", bound(on_models_dir, ctx), ["models_dir"],
            ["scorer_guide", "download_scorer"])
    connect(components, "download", "click", bound(on_download, ctx),
            ["download_scorer", "models_dir", "scorers", "scorer_use"],
            ["download_status", "scorer_guide", "download_scorer", "scorer_status", "scorers"])
    connect(components, "toggle_manual", "click", on_toggle_manual, ["scorers", "scorer_use"],
            ["scorers", "scorer_use"])
