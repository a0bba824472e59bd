"""The "Optimize Merge" tab: set up a run, watch it live, keep the result.

One layout for gradio 3.41 and 4.x (differences in :mod:`..compat`). The left column holds the
set-up panels (each control maps to a run-config field, see :mod:`..form`); the right column the
Start/Stop bar, the status line, the live gallery, and tabs for the best trial so far, the trials
table, the plots and the results. Element ids and CSS classes start with ``sd_optim_``.

One module per panel (``models.py`` … ``optimizer.py``, ``config_file.py``, ``run_view.py``,
``results.py``; ``live.py`` starts and follows a run): each has a ``build_*`` function returning its
components by name and a ``wire_*`` function binding its module-level handlers, which return
``{name: value}`` (see :mod:`.wiring`).
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..runs import RunManager
from .config_file import build_config_file, wire_config_file
from .context import TabContext, elem, initial_form
from .guide import build_guide, wire_guide
from .live import wire_live
from .mode import build_mode, wire_mode
from .models import build_models, wire_models
from .optimizer import build_optimizer, wire_optimizer
from .payloads import build_payloads, wire_payloads
from .results import build_best, build_plots, build_results, build_trials, wire_results
from .run_view import build_run_view, wire_run_view
from .scorers import build_scorers, wire_scorers
from .wiring import Components

__all__ = ["TabContext", "build_tab"]


def build_tab(manager: Callable[[], RunManager], ctx: TabContext) -> gr.Blocks:
    """The tab's Blocks: the layout, then every handler wired to it."""
    form = initial_form(ctx)
    components: Components = {}
    with gr.Blocks(analytics_enabled=False, elem_id=elem("tab")) as tab:
        with gr.Row(elem_id=elem("layout")):
            with gr.Column(scale=5, elem_id=elem("setup")):
                for build in (build_models, build_mode, build_guide, build_payloads, build_scorers,
                              build_optimizer):
                    components.update(build(ctx, form))
                components.update(build_config_file())
            with gr.Column(scale=7, elem_id=elem("live")):
                components.update(build_run_view(ctx))
                with gr.Tabs(elem_id=elem("tabs")):
                    for build_tab_page in (build_best, build_trials, build_plots, build_results):
                        components.update(build_tab_page())
        # the order matters where one event has several handlers: the panel's own first
        wire_models(components, ctx)
        wire_mode(components, ctx)
        wire_guide(components, ctx)
        wire_payloads(components, ctx)
        wire_scorers(components, ctx)
        wire_optimizer(components, ctx, manager)
        wire_config_file(components, ctx)
        wire_live(components, ctx, manager)
        wire_run_view(components, manager)
        wire_results(components, ctx, manager)
    return tab
