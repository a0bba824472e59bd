"""``python -m sd_optim app``: the Optimize Merge tab in a browser, without a WebUI.

The standalone host is a diffusers pipeline built from the run's ``host_model``; checkpoints are
the ``.safetensors`` files under ``--models-dir``. No WebUI injects the extension's
``javascript/`` and ``style.css`` here, so the app does it itself. ``--demo`` generates tiny
models and reference images and fills the set-up in, so pressing Start runs a real optimization.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from ..config import RunConfig, config_from_dict
from ..demo import demo_data, ensure_references
from ..errors import ConfigError, Problem
from ..hosts import diffusers_host
from ..hosts.base import Host, name_problems
from ..hosts.standalone import choose_device, make_host
from . import compat
from . import form as fm
from .catalog import ModelCatalog
from .runs import Defaults, RunManager
from .tab import TabContext, build_tab

ROOT = Path(__file__).resolve().parents[2]  # the extension's folder: javascript/, style.css


class StandaloneHosts:
    """Builds the diffusers host a config asks for, and keeps it while the next run wants the same."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple[str, str, str] | None = None
        self._host: Host | None = None

    def __call__(self, config: RunConfig) -> Host:
        if not config.models:
            raise ConfigError([Problem("models", "pick the checkpoints to merge")])
        model = config.model_by_name(config.host_model) if config.host_model else config.models[0]
        key = (str(config.resolve_path(model.path).resolve()),
               str(config.resolve_path(config.diffusers_config)) if config.diffusers_config else "",
               choose_device(config.device))
        with self._lock:
            if key != self._key or self._host is None:
                self._host = None  # let the previous pipeline go before the next one loads
                self._host = make_host(config, device=key[2])
                self._key = key
            return self._host


def injected_assets() -> tuple[str, str]:
    """(style.css, the javascript/ files as one function body) of the extension."""
    css_file = ROOT / "style.css"
    css = css_file.read_text(encoding="utf-8") if css_file.is_file() else ""
    scripts = sorted((ROOT / "javascript").glob("*.js"))
    js = "\n".join(p.read_text(encoding="utf-8") for p in scripts)
    return css, js


def demo_setup(folder: Path, trials: int = 8) -> dict[str, Any]:
    """Tiny models, references and a ready set-up (the config data) in ``folder``."""
    data = demo_data(folder, trials, study="")
    ensure_references(config_from_dict(data), folder)
    data.pop("output_dir")
    return data


def build_app(*, models_dir: str | None, output_dir: str, demo: bool = False, demo_folder: str | None = None,
              scorer_models: str = ""):
    """(the gradio Blocks, its RunManager); ``scorer_models``: the scorer models folder a set-up
    that names none uses."""
    initial: dict[str, Any] = {}
    if demo:
        folder = Path(demo_folder or tempfile.mkdtemp(prefix="sd-optim-app-demo-"))
        folder.mkdir(parents=True, exist_ok=True)
        data = demo_setup(folder)
        models_dir = models_dir or str(folder / "models")
        catalog = ModelCatalog(folder=models_dir)
        initial = fm.data_to_form(data, catalog.title_for)
        initial["diffusers_config"] = data["diffusers_config"]
        initial["device"] = "cpu"
    else:
        catalog = ModelCatalog(folder=models_dir)
    manager = RunManager(defaults=Defaults(output_dir=output_dir, models_dir=scorer_models), host_for=StandaloneHosts())
    samplers, schedulers = list(diffusers_host._SAMPLERS), list(diffusers_host._SCHEDULES)
    ctx = TabContext(catalog=catalog, samplers=lambda: samplers, schedulers=lambda: schedulers,
                     sampler_problems=lambda sampler, scheduler: name_problems(sampler, scheduler, samplers,
                                                                              schedulers),
                     output_dir=lambda: output_dir, models_dir=lambda: scorer_models, standalone=True,
                     initial=initial)
    css, js = injected_assets()
    with gr.Blocks(css=css, title="sd-optim · Optimize Merge", analytics_enabled=False) as app:
        gr.Markdown("## sd-optim · Optimize Merge" + (" · demo (tiny generated models)" if demo else ""),
                    elem_id="sd_optim_title")
        build_tab(lambda: manager, ctx)
        if js:
            app.load(None, None, None, **compat.js(f"() => {{\n{js}\n}}"))
    return compat.queue(app), manager


def serve(*, host: str, port: int | None, models_dir: str | None, output_dir: str, demo: bool,
          demo_folder: str | None = None, scorer_models: str = "") -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app, manager = build_app(models_dir=models_dir, output_dir=output_dir, demo=demo, demo_folder=demo_folder,
                             scorer_models=scorer_models)
    try:
        app.launch(server_name=host, server_port=port, inbrowser=False, show_api=False)
    finally:
        manager.shutdown()
