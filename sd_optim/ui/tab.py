"""The "Optimize Merge" tab, minimal version: start a run from a config file (or YAML text),
stop it, and follow its status and latest images. Works with gradio 3.41 (A1111, reForge,
Forge Classic) and 4.40 (Forge): only components and arguments both versions share are used.
The full tab (models, methods, blocks, prompts and scorers as controls, live plots) comes with
the UI work; the run logic it will drive is the same ``RunManager``.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from .runs import RunManager

INTRO = (
    "Optimize a merge of the checkpoints named in a run config (see the extension's README and "
    "`examples/`). The loaded checkpoint is merged into in place for each trial and restored "
    "when the run ends, whatever happens. The WebUI's **Interrupt** button stops a run too."
)


def build_tab(manager: Callable[[], RunManager]) -> gr.Blocks:
    from .entry import start_run

    def show(status: dict):
        lines = [status.get("text", "")]
        for problem in status.get("problems", []):
            lines.append(f"- {problem}")
        live = manager().current
        images = list(live.images) if live is not None else []
        return "\n".join(lines), images

    def on_start(config: str, trials):
        n = int(trials or 0)
        return show(start_run(config, trials=n if n > 0 else None))

    def on_stop():
        return show(manager().stop("stopped from the tab"))

    def on_refresh():
        return show(manager().status())

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown(INTRO)
        config = gr.Textbox(label="Run config: a .yaml file path, or YAML text", lines=6,
                            elem_id="sd_optim_config")
        with gr.Row():
            trials = gr.Number(label="Trials (0: as in the config)", value=0, precision=0,
                               elem_id="sd_optim_trials")
            start = gr.Button("Start", variant="primary", elem_id="sd_optim_start")
            stop = gr.Button("Stop", elem_id="sd_optim_stop")
            refresh = gr.Button("Refresh", elem_id="sd_optim_refresh")
        status = gr.Textbox(label="Status", lines=4, interactive=False, elem_id="sd_optim_status")
        gallery = gr.Gallery(label="Latest trial", elem_id="sd_optim_gallery")
        start.click(on_start, inputs=[config, trials], outputs=[status, gallery])
        stop.click(on_stop, inputs=[], outputs=[status, gallery])
        refresh.click(on_refresh, inputs=[], outputs=[status, gallery])
    return tab
