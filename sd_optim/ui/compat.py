"""Everything that differs between gradio 3.41 (A1111, reForge, Forge Classic) and 4.x (Forge).

The tab uses only components and arguments both versions share; what still differs (JS hook
argument, uploaded-file values, dropdown choice updates, plot rendering) goes through here.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .plots import preferred_kind

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def js(code: str) -> dict[str, str]:
    """The keyword that attaches browser-side code to an event: ``_js`` in 3.41, ``js`` in 4."""
    return {"_js": code} if GRADIO_MAJOR < 4 else {"js": code}


def file_path(value: Any) -> str | None:
    """An uploaded ``gr.File`` value as a path: 3.41 gives a tempfile object, 4 a path string."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    if isinstance(value, dict):  # gradio_client-style payloads
        return value.get("path") or value.get("name")
    return str(getattr(value, "name", value))


def table_rows(value: Any) -> list[list[Any]]:
    """A ``gr.Dataframe(type="array")`` value as rows (some versions still hand over a DataFrame,
    or a ``{"data": ...}`` dict)."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get("data") or []
    if hasattr(value, "values") and hasattr(value, "columns"):
        value = value.values.tolist()
    return [list(r) for r in value]


def table(rows: list[list[Any]], columns: int) -> list[list[Any]]:
    """A Dataframe value that keeps its headers: gradio 3.41 renders an empty list as a table
    whose headers are 0, 1, 2..., so an empty table is one blank row (ignored when read back)."""
    return [list(r) for r in rows] if rows else [[""] * columns]


def plot_kind() -> str:
    """Which figures ``gr.Plot`` shows reliably in this gradio (see :mod:`sd_optim.ui.plots`)."""
    return preferred_kind(GRADIO_MAJOR)


def unlimited() -> dict[str, Any]:
    """Event kwargs that let a long handler (one following a run) not hold up others: gradio 4
    runs one call per event at a time by default; 3.41 has no per-event limit."""
    return {"concurrency_limit": None} if GRADIO_MAJOR >= 4 else {}


def repeatable() -> dict[str, Any]:
    """Event kwargs that let an event be triggered again while its last call still runs (gradio 4
    ignores a click until then by default; 3.41 always takes it)."""
    return {"trigger_mode": "multiple"} if GRADIO_MAJOR >= 4 else {}


def queue(blocks: gr.Blocks) -> gr.Blocks:
    """Enable the queue the live view's generator handlers need (the WebUIs do it themselves)."""
    if GRADIO_MAJOR < 4:
        return blocks.queue(concurrency_count=4)
    return blocks.queue(default_concurrency_limit=4)
