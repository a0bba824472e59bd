"""What the extension registers in the WebUI: the "Optimize Merge" tab, the settings section,
the API routes under ``/sd-optim/``, the unload hook, and an always-on script that marks images
generated from a kept merge. ``scripts/sd_optim_tab.py`` calls :func:`register` and exposes
:class:`KeptMergeInfotext`.

Only imported inside a WebUI (it imports ``modules.*``); the run logic is in ``runs.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from modules import script_callbacks, scripts, shared

from ..errors import ConfigError
from ..files.paths import split_folders
from ..hosts import webui_host
from ..scoring.files import DEFAULT_MODELS_DIR
from .api import ApiAccess, add_routes, parse_api_auth
from .runs import Defaults, RunBusy, RunManager

log = logging.getLogger("sd_optim")

TAB_TITLE = "Optimize Merge"
TAB_ID = "sd_optim"
SECTION = ("sd_optim", "Optimize Merge")

# key: (default, label)
SETTINGS: dict[str, tuple[Any, str]] = {
    "sd_optim_output_dir": ("outputs/sd-optim", "Output folder for runs (a folder per study)"),
    "sd_optim_models_dir": (DEFAULT_MODELS_DIR, "Scorer models folder (aesthetic / CLIP weights)"),
    "sd_optim_cache_budget_gb": (0.0, ("Memory budget for cached input models, in GB of GPU memory "
                                       "(0: keep them in CPU memory)")),
    "sd_optim_storage": ("", ("Default Optuna storage URL (empty: SQLite in the run folder; "
                              "postgresql://... to share a study between WebUIs)")),
    "sd_optim_api_dirs": ("", ("Extra folders a config sent to the /sd-optim API may name, separated by ';' "
                               "(besides the WebUI's models and outputs folders and the folders above)")),
}

QUEUE_OFF = ("The WebUI was started with --no-gradio-queue: the tab's live view cannot update and "
             "Start will not follow the run. Restart the WebUI without that flag.")

_manager: RunManager | None = None


def manager() -> RunManager:
    """The process's run manager (one live run per WebUI), created on first use."""
    global _manager
    if _manager is None:
        _manager = RunManager(webui_host())
    _manager.defaults = current_defaults()
    return _manager


def current_defaults() -> Defaults:
    def opt(key):
        return getattr(shared.opts, key, SETTINGS[key][0])

    try:
        budget = float(opt("sd_optim_cache_budget_gb") or 0)
    except (TypeError, ValueError):
        budget = 0.0
    return Defaults(output_dir=str(opt("sd_optim_output_dir") or ""),
                    models_dir=str(opt("sd_optim_models_dir") or ""),
                    storage=str(opt("sd_optim_storage") or ""), cache_budget_gb=max(budget, 0.0))


# --- callbacks ------------------------------------------------------------------------------

def on_ui_settings() -> None:
    import gradio as gr

    for key, (default, label) in SETTINGS.items():
        # the settings page builds a component from the default's type only for str, int and
        # bool (modules/ui_settings.py create_setting_component): a float needs its own
        component, args = (gr.Slider, {"minimum": 0, "maximum": 192, "step": 0.5}) \
            if isinstance(default, float) else (None, None)
        shared.opts.add_option(key, shared.OptionInfo(default, label, component, args, section=SECTION))


def on_ui_tabs():
    from .tab import build_tab

    return [(build_tab(manager, tab_context()), TAB_TITLE, TAB_ID)]


def tab_context():
    """The WebUI's side of the tab: its checkpoint list, samplers and settings."""
    from .catalog import ModelCatalog
    from .tab import TabContext

    host = manager().host

    def loaded_model_config() -> str | None:
        try:
            return host.model_config()
        except Exception:  # noqa: BLE001 - no model loaded (yet): the preview says to pick one
            return None

    return TabContext(catalog=ModelCatalog(list_fn=host.checkpoints, refresh_fn=host.refresh_checkpoints),
                      samplers=host.samplers, schedulers=host.schedulers,
                      sampler_problems=host.sampler_problems, loaded_model_config=loaded_model_config,
                      output_dir=lambda: current_defaults().output_dir or "outputs/sd-optim",
                      storage=lambda: current_defaults().storage,
                      models_dir=lambda: current_defaults().models_dir,
                      notice=QUEUE_OFF if getattr(shared.cmd_opts, "no_gradio_queue", False) else "")


def api_folders() -> list[Path]:
    """The folders a config sent to the API may name: the WebUI's models and outputs folders, the
    folders of the checkpoints it lists (``--ckpt-dir``), its Lora folder, the sd-optim settings'
    folders and the extra ones the settings list."""
    defaults = current_defaults()
    data_path = getattr(shared, "data_path", None)
    folders = [getattr(shared, "models_path", None), data_path and os.path.join(data_path, "outputs"),
               getattr(shared.cmd_opts, "ckpt_dir", None), getattr(shared.cmd_opts, "lora_dir", None),
               defaults.output_dir, defaults.models_dir,
               *split_folders(str(getattr(shared.opts, "sd_optim_api_dirs", "") or ""))]
    try:
        folders += [os.path.dirname(c.path) for c in manager().host.checkpoints()]
    except Exception:  # no checkpoint list: the other folders still hold
        log.debug("sd-optim: the checkpoint list is unavailable", exc_info=True)
    return [Path(f).expanduser().absolute() for f in dict.fromkeys(f for f in folders if f)]


def api_access(app) -> ApiAccess:
    """The WebUI's own API protection for the routes: ``--api-auth`` credentials when given;
    otherwise, with ``--gradio-auth`` (or a login gradio knows of), a logged-in user's cookie."""
    opts = shared.cmd_opts
    login = bool(getattr(opts, "gradio_auth", None) or getattr(opts, "gradio_auth_path", None)
                 or getattr(app, "auth", None))
    return ApiAccess(credentials=parse_api_auth(getattr(opts, "api_auth", None) or ""), login=login,
                     folders=api_folders)


def on_app_started(_demo, app) -> None:
    add_routes(app, manager, api_access(app))


def on_script_unloaded() -> None:
    if _manager is not None and _manager.live:
        log.info("sd-optim: the extension is unloading; stopping the run and restoring the model")
        _manager.shutdown()


def register() -> None:
    script_callbacks.on_ui_settings(on_ui_settings)
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_script_unloaded(on_script_unloaded)


def start_run(source: str | dict, **kwargs) -> dict[str, Any]:
    """Start a run; errors come back as ``{"state": "refused", "text": ...}`` for the tab."""
    try:
        return manager().start(source, **kwargs)
    except RunBusy as e:
        return {**e.status, "state": "refused", "text": str(e)}
    except ConfigError as e:
        return {"state": "refused", "text": str(e), "problems": list(e.problems)}


class KeptMergeInfotext(scripts.Script):
    """After keep-best, every image the user generates from the kept merge says so in its
    infotext (until the WebUI reloads the checkpoint)."""

    def title(self):
        return "sd-optim kept merge"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return []

    def process(self, p, *args):
        if _manager is None:
            return
        kept = _manager.host.kept_merge()
        if kept is not None:
            p.extra_generation_params.update(kept.infotext_params())
