"""A faithful fake of lllyasviel/stable-diffusion-webui-forge ``main`` (commit
``dfdcbab685e57677014f05a3309b48cc87383167``, version '2.0.1v1.10.1', "Forge2", the ``backend/``
one) with lllyasviel/huggingface_guess 84826248, for the Forge host tests.

``installed(checkpoints, config_dir, arch=...)`` puts fresh fake ``modules``, ``modules_forge``,
``backend`` (namespace packages, as in Forge), ``huggingface_guess`` and the built-in LoRA
extension's ``networks`` into ``sys.modules`` (their folder stays on ``sys.path`` for the block,
as Forge keeps its roots there), lists the checkpoints, selects the first one the way the UI
does at start (``main_entry.refresh_model_loading_parameters``) and, with ``load=True``, loads it
as the first generation would (``forge_model_reload``); with ``load=False`` the model is still
the ``FakeInitialModel``. Behaviour follows docs/hosts/forge.md §1-§3 and §6 (each fake module's
docstring names the Forge file it stands for); no WebUI code is copied.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ..render import renderer_for

WEBUI = Path(__file__).resolve().parent / "webui"
_PATHS = (str(WEBUI), str(WEBUI / "lora"))
_OWNED = ("modules", "modules_forge", "backend", "huggingface_guess", "networks")


def _owned(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in _OWNED)


class FakeForge:
    """Handle on an installed fake: its modules and a few user actions."""

    def __init__(self, renderer):
        import networks
        from backend import memory_management
        from modules import call_queue, processing, script_callbacks, sd_models, shared
        from modules_forge import main_entry, main_thread

        self.shared, self.processing, self.sd_models, self.call_queue = shared, processing, sd_models, call_queue
        self.memory_management, self.main_entry, self.main_thread = memory_management, main_entry, main_thread
        self.script_callbacks, self.networks = script_callbacks, networks
        self.state, self.opts = shared.state, shared.opts
        self.renderer = renderer

    @property
    def model(self):
        return self.sd_models.model_data.sd_model

    def txt2img(self, prompt="a red fox", *, seed=3, steps=2, cfg_scale=5.0, size=64, **kwargs):
        """A user's generation (the API path: queued, its own job, scripts off)."""
        with self.call_queue.queue_lock:
            self.state.begin(job="txt2img")
            try:
                p = self.processing.StableDiffusionProcessingTxt2Img(
                    prompt=prompt, seed=seed, steps=steps, cfg_scale=cfg_scale, width=size, height=size,
                    sampler_name=kwargs.pop("sampler_name", "Euler"), do_not_save_samples=True,
                    do_not_save_grid=True, **kwargs)
                p.scripts = None
                with contextlib.closing(p):
                    return self.processing.process_images(p)
            finally:
                self.state.end()

    def select(self, checkpoint=None, *, storage=None, additional_modules=None):
        """The checkpoint / module dropdowns and the storage radio: options written, loading
        parameters refreshed at once (not under the queue lock), the reload left to the next
        generation."""
        if checkpoint is not None:
            self.opts.set("sd_model_checkpoint", self.sd_models.checkpoint_aliases[Path(checkpoint).name].title)
        if storage is not None:
            self.opts.set("forge_unet_storage_dtype", storage)
        if additional_modules is not None:
            self.opts.set("forge_additional_modules", list(additional_modules))
        self.main_entry.refresh_model_loading_parameters()

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter of the three components under ``unet.`` / ``vae.`` / ``clip.`` + its
        live name, cloned."""
        fo = self.model.forge_objects
        out = {}
        for prefix, root in (("unet.", fo.unet.model.diffusion_model), ("vae.", fo.vae.first_stage_model),
                             ("clip.", fo.clip.cond_stage_model)):
            out.update({prefix + n: p.detach().clone() for n, p in root.named_parameters()})
        return out


@contextlib.contextmanager
def installed(checkpoints, config_dir, *, arch: str = "sd1-ldm", load: bool = True, storage: str = "Automatic"):
    """Install a fresh fake Forge; ``checkpoints[0]`` is selected (and loaded with ``load``)."""
    stashed = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _owned(k)]}
    sys.path[:0] = list(_PATHS)
    renderer = renderer_for(arch, checkpoints[0], config_dir)
    renderer.step_hook = None
    try:
        import networks  # noqa: F401 - the built-in LoRA extension
        from backend import loader
        from modules import sd_models, shared
        from modules_forge import main_entry

        loader.renderer = renderer
        from modules import scripts

        scripts.KEEP_ROOT_ON_PATH = True  # Forge keeps extension roots on sys.path
        # modules.paths.models_path and sd_models.model_path (its "Stable-diffusion"), in a temporary folder
        models = tempfile.mkdtemp(prefix="fake-forge-models-")
        main_entry.models_path = models
        sd_models.model_path = str(Path(models) / "Stable-diffusion")
        Path(sd_models.model_path).mkdir()
        sd_models.checkpoint_files[:] = [str(p) for p in checkpoints]
        sd_models.list_models()
        shared.opts.data["forge_unet_storage_dtype"] = storage
        shared.opts.data["sd_model_checkpoint"] = sd_models.checkpoint_aliases[Path(checkpoints[0]).name].title
        main_entry.refresh_model_loading_parameters()
        fake = FakeForge(renderer)
        if load:
            sd_models.forge_model_reload()
        yield fake
    finally:
        renderer.step_hook = None
        if "modules_forge.main_entry" in sys.modules and sys.modules["modules_forge.main_entry"].models_path:
            shutil.rmtree(sys.modules["modules_forge.main_entry"].models_path, ignore_errors=True)
        for k in [k for k in sys.modules if _owned(k)]:
            del sys.modules[k]
        for p in _PATHS:
            sys.path.remove(p)
        sys.modules.update(stashed)
