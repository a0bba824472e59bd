"""Binding handlers to events by component name.

A panel builder returns its components in a dict by name (the set-up controls by their form field,
the others by their element id without the prefix, a panel's problem box as ``problems_<panel>``);
the tab gathers them into one dict. A handler is a module-level function with explicit inputs that
returns (or yields) ``{name: value or gr.update(...)}``; :func:`connect` hands gradio the same as
``{component: value}``, so an output is addressed by what it is, never by its place in a list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import gradio as gr

from .. import form as fm
from .context import elem

Components = dict[str, Any]  # name -> gradio component


def problem_box(panel: str) -> str:
    """The name of the problem box under a set-up panel."""
    return f"problems_{panel}"


PROBLEM_BOXES = [problem_box(p) for p in fm.PANELS]


def set_up_panel(parts: Components, panel: str, *, open: bool) -> Any:
    """The accordion of a set-up panel (``fm.PANEL_TITLES``), kept in ``parts`` as ``panel_<panel>``
    (a refused Start opens the panels whose problems it marks): use it as a ``with`` block."""
    parts[f"panel_{panel}"] = gr.Accordion(fm.PANEL_TITLES[panel], open=open, elem_id=elem(f"panel_{panel}"))
    return parts[f"panel_{panel}"]


PANEL_ACCORDIONS = [f"panel_{p}" for p in fm.PANELS]


def problems_markdown(panel: str) -> Components:
    """The (empty) box under a set-up panel where its problems show, by its name."""
    return {problem_box(panel): gr.Markdown("", elem_id=elem(f"err_{panel}"), elem_classes=[elem("error")])}


def addressed(fn: Callable[..., Any], components: Components, outputs: Iterable[str]) -> Callable[..., Any]:
    """``fn`` with its ``{name: value}`` results turned into gradio's ``{component: value}``."""
    allowed = set(outputs)

    def to_components(result: dict[str, Any]) -> dict[Any, Any]:
        unknown = set(result) - allowed
        if unknown:
            raise KeyError(f"{fn.__name__} updates components it does not declare: {sorted(unknown)}")
        return {components[name]: value for name, value in result.items()}

    if inspect.isgeneratorfunction(fn):
        def run(*args):
            for result in fn(*args):
                yield to_components(result)
    else:
        def run(*args):
            return to_components(fn(*args))
    run.__name__ = fn.__name__
    return run


def connect(components: Components, trigger: str, event: str, fn: Callable[..., Any],
            inputs: Iterable[str], outputs: Iterable[str], **options: Any) -> None:
    """On ``components[trigger]``'s ``event``, call ``fn`` with the values of ``inputs`` (names) and
    show what it returns in the components it names (each one of ``outputs``)."""
    outputs = list(outputs)
    getattr(components[trigger], event)(addressed(fn, components, outputs),
                                        [components[name] for name in inputs],
                                        [components[name] for name in outputs], **options)


def on_form(fn: Callable[..., Any], *leading: Any) -> Callable[..., Any]:
    """``fn(*leading, form)`` called with the set-up controls' values (inputs :data:`form.FIELDS`)."""
    if inspect.isgeneratorfunction(fn):
        def run(*values):
            yield from fn(*leading, dict(zip(fm.FIELDS, values)))
    else:
        def run(*values):
            return fn(*leading, dict(zip(fm.FIELDS, values)))
    run.__name__ = fn.__name__
    return run


def bound(fn: Callable[..., Any], *leading: Any) -> Callable[..., Any]:
    """``fn`` with its first arguments (the context, the run manager) given: a named partial."""
    if inspect.isgeneratorfunction(fn):
        def run(*args):
            yield from fn(*leading, *args)
    else:
        def run(*args):
            return fn(*leading, *args)
    run.__name__ = fn.__name__
    return run
