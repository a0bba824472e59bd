"""A faithful fake of AUTOMATIC1111 stable-diffusion-webui **v1.10.1** (commit
``82a973c04367123ae98bd9abdf80d9eda9b910e2``) for the A1111 host tests.

``installed(checkpoints, config_dir)`` puts a fresh fake ``modules`` package (``webui/modules``:
``shared``, ``shared_state``, ``options``, ``processing``, ``sd_models``, ``sd_hijack``, ``sd_samplers``,
``sd_schedulers``, ``sd_vae``, ``sd_unet``, ``devices``, ``lowvram``, ``call_queue``, ``fifo_lock``,
``script_callbacks``, ``extra_networks``) and the built-in Lora extension's top-level ``networks``
(``webui/lora``) into ``sys.modules`` for the block's duration, loads the first checkpoint the
way ``load_model`` does (hijacked, Lora names assigned, empty-prompt cond computed) and yields a
``FakeA1111`` handle. Behaviour follows docs/hosts/a1111.md (each fake module's docstring names
the A1111 file it stands for); no WebUI code is copied. SD1 and SDXL checkpoints; set ``opts.fp8_storage`` before
loading (``load=False``) for fp8 storage.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import safetensors
import torch

from ..render import renderer_for

WEBUI = Path(__file__).resolve().parent / "webui"
_OWNED = ("modules", "networks")


def _owned(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in _OWNED)


class FakeA1111:
    """Handle on an installed fake: its modules and a few user actions."""

    def __init__(self):
        import networks
        from modules import call_queue, processing, sd_hijack, sd_models, sd_vae, shared

        self.shared, self.processing, self.sd_models = shared, processing, sd_models
        self.sd_hijack, self.call_queue, self.sd_vae, self.networks = sd_hijack, call_queue, sd_vae, networks
        self.state = shared.state
        self.renderer = sd_models.renderer

    @property
    def model(self):
        return self.sd_models.model_data.sd_model

    def txt2img(self, prompt="a red fox", *, seed=3, steps=2, cfg_scale=5.0, size=64, **kwargs):
        """A user's generation from the txt2img tab: queued, its own job, scripts off."""
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

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter under its live (hijacked) name, cloned."""
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def unhijacked_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict under checkpoint names, as A1111 sees it while loading weights."""
        hijack = self.sd_hijack.model_hijack
        hijack.undo_hijack(self.model)
        try:
            return {k: v.clone() for k, v in self.model.state_dict().items()}
        finally:
            hijack.hijack(self.model)

    def use_external_vae(self, state_dict: dict[str, torch.Tensor], path="external.vae.safetensors"):
        """Select an external VAE in Settings: the checkpoint's VAE is kept in ``base_vae``."""
        vae = self.model.first_stage_model
        self.sd_vae.base_vae = {k: v.clone() for k, v in vae.state_dict().items()}
        vae.load_state_dict(state_dict)
        self.sd_vae.loaded_vae_file = path
        self.model.loaded_vae_file = path


@contextlib.contextmanager
def installed(checkpoints, config_dir, *, load: bool = True):
    """Install a fresh fake WebUI; ``checkpoints[0]`` is the loaded model."""
    stashed = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _owned(k)]}
    sys.path[:0] = [str(WEBUI), str(WEBUI / "lora")]
    try:
        import networks  # noqa: F401 - the Lora extension's load registers its patches and callback
        from modules import call_queue, sd_models, shared

        sd_models.checkpoint_files[:] = [str(p) for p in checkpoints]
        shared.data_path = tempfile.mkdtemp(prefix="fake-a1111-data-")
        shared.models_path = str(Path(shared.data_path) / "models")
        sd_models.model_path = str(Path(shared.models_path) / "Stable-diffusion")
        Path(sd_models.model_path).mkdir(parents=True)
        with safetensors.safe_open(str(checkpoints[0]), "pt") as f:
            arch = "sdxl-sgm" if any(k.startswith("conditioner.") for k in f.keys()) else "sd1-ldm"  # noqa: SIM118
        sd_models.renderer = renderer_for(arch, checkpoints[0], config_dir)
        sd_models.list_models()
        # initialize_util: a checkpoint change in Settings reloads through the queue
        shared.opts.onchange("sd_model_checkpoint",
                             call_queue.wrap_queued_call(lambda: sd_models.reload_model_weights()), call=False)
    finally:
        for p in (str(WEBUI), str(WEBUI / "lora")):
            sys.path.remove(p)
    fake = FakeA1111()
    fake.renderer.step_hook = None
    try:
        if load:
            sd_models.load_model()
        yield fake
    finally:
        fake.renderer.step_hook = None
        shutil.rmtree(shared.data_path, ignore_errors=True)
        sys.modules["networks"].originals.undo()
        for k in [k for k in sys.modules if _owned(k)]:
            del sys.modules[k]
        sys.modules.update(stashed)
