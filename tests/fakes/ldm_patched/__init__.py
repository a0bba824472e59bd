"""A faithful fake of the ldm_patched-family WebUIs for the ldm_patched host tests, in two profiles:

- ``"reforge"``: Panchovix/stable-diffusion-webui-reForge ``main`` 3b56b268 (``'1.0.0v2-v1.10.1RC'``,
  A1111 1.10 base): ``scheduler`` field, 3-slot cond caches, filtered ``clip_*`` keys from
  ``process_clip_state_dict``, a multi-model cache whose reload is a no-op on a matching filename;
- ``"classic"``: Haoming02/sd-webui-forge-classic ``classic`` 1f95d717 (``"classic"``), and
  ``"previous"``: lllyasviel/stable-diffusion-webui-forge ``previous`` bfee03d8
  (``'0.0.17v1.8.0rc'``), both A1111 1.8 based: no ``scheduler``, sampler names with the schedule
  built in, 2-slot caches, in-place unfiltered ``cond_stage_model.clip_*`` keys.

``installed(checkpoints, config_dir, profile=...)`` puts fresh fake ``modules``, ``modules_forge``,
``ldm_patched`` and the Lora extension's top-level ``networks`` into ``sys.modules`` for the block's
duration, loads ``checkpoints[0]`` the way ``load_model`` does and yields a ``FakeLdmPatched``
handle. SD1 or SDXL follows the checkpoint. Behaviour follows docs/hosts/forge.md §4 and §6 (each
fake module's docstring names the WebUI files it stands for); no WebUI code is copied. Images are
rendered by tests/fakes/render.py from the live parameters (UNet/VAE by checkpoint keys, the text
encoders in the Hugging Face layout).
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
_OWNED = ("modules", "modules_forge", "ldm_patched", "networks")
VERSIONS = {"reforge": "1.0.0v2-v1.10.1RC", "classic": "classic", "previous": "0.0.17v1.8.0rc"}


def _owned(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in _OWNED)


class FakeLdmPatched:
    """Handle on an installed fake: its modules and a few user actions."""

    def __init__(self, profile: str):
        import networks
        from ldm_patched.modules import model_management
        from modules import call_queue, processing, sd_models, sd_vae, shared

        self.profile = profile
        self.shared, self.processing, self.sd_models, self.sd_vae = shared, processing, sd_models, sd_vae
        self.call_queue, self.networks, self.model_management = call_queue, networks, model_management
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
                with contextlib.closing(p):
                    return self.processing.process_images(p)
            finally:
                self.state.end()

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every live parameter of the ComfyUI-style modules, cloned, under
        ``unet.``/``vae.``/``clip.`` + its name there."""
        objects = self.model.forge_objects
        roots = {"unet": objects.unet.model.diffusion_model, "vae": objects.vae.first_stage_model,
                 "clip": objects.clip.cond_stage_model}
        return {f"{r}.{n}": p.detach().clone() for r, m in roots.items() for n, p in m.named_parameters()}

    def loaded_checkpoint(self, path) -> dict[str, torch.Tensor]:
        """What a fresh load of ``path`` puts in those modules (``parameters()``'s names)."""
        import safetensors.torch
        from modules_forge import forge_loader

        info = self.sd_models.CheckpointInfo(path)
        model = forge_loader.load_model_for_a1111(checkpoint_info=info, state_dict=safetensors.torch.load_file(str(path)))
        objects = model.forge_objects
        roots = {"unet": objects.unet.model.diffusion_model, "vae": objects.vae.first_stage_model,
                 "clip": objects.clip.cond_stage_model}
        return {f"{r}.{n}": p.detach().clone() for r, m in roots.items() for n, p in m.named_parameters()}

    def use_external_vae(self, state_dict: dict[str, torch.Tensor], path="external.vae.safetensors"):
        """Select an external VAE (reForge ``sd_vae.load_vae``): a new ``forge_objects.vae``."""
        from ldm_patched.modules import sd as ldm_sd

        m = self.model
        vae = ldm_sd.VAE(state_dict)
        for objects in (m.forge_objects, m.forge_objects_original, m.forge_objects_after_applying_lora):
            objects.vae = vae
        m.first_stage_model = vae.first_stage_model
        self.sd_vae.loaded_vae_file = path

    def select_checkpoint(self, path):
        """Pick a checkpoint in the dropdown: opts change, the reload waits for the queue."""
        info = self.sd_models.checkpoint_aliases[Path(path).name]
        self.shared.opts.set("sd_model_checkpoint", info.title)


@contextlib.contextmanager
def installed(checkpoints, config_dir, *, profile: str = "reforge", load: bool = True, fp8: bool = False,
              quantized: str | None = None, checkpoints_limit: int = 1, te_elsewhere: bool = False):
    """Install a fresh fake WebUI of ``profile``; ``checkpoints[0]`` is the loaded model.

    ``fp8``: ``--unet-in-fp8-e4m3fn``; ``quantized``: "gguf" / "nf4" mark the UNet weights as
    packed, "scaled_fp8" the model config (what the host must refuse); ``te_elsewhere``: the text
    encoder loads on another device than ``get_torch_device()``, so ``unload_all_models`` skips it."""
    from transformers import CLIPTextConfig

    if profile not in VERSIONS:
        raise ValueError(f"profile must be one of {sorted(VERSIONS)}, got {profile!r}")
    import safetensors

    with safetensors.safe_open(str(checkpoints[0]), "pt") as f:
        names = f.keys()
    sdxl = "conditioner.embedders.1.model.ln_final.weight" in names
    stashed = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _owned(k)]}
    sys.path[:0] = [str(WEBUI), str(WEBUI / "lora")]
    try:
        from modules_forge import forge_version

        forge_version.version = VERSIONS[profile]
        import networks  # noqa: F401 - the Lora extension's module
        from ldm_patched.modules import model_management
        from ldm_patched.modules.args_parser import args
        from modules import call_queue, sd_models, shared
        from modules_forge import forge_loader

        args.unet_in_fp8_e4m3fn = fp8
        model_management.TEXT_ENCODER_DEVICE = torch.device("cpu", 0) if te_elsewhere else torch.device("cpu")
        forge_loader.quantize = quantized
        shared.opts.data["sd_checkpoints_limit"] = checkpoints_limit
        sd_models.checkpoint_files[:] = [str(p) for p in checkpoints]
        sd_models.model_path = tempfile.mkdtemp(prefix="fake-ldm-patched-Stable-diffusion-")
        sd_models.renderer = renderer_for("sdxl-sgm" if sdxl else "sd1-ldm", checkpoints[0], config_dir)
        parts = ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",)
        sd_models.clip_configs = tuple(CLIPTextConfig.from_pretrained(str(Path(config_dir) / c)) for c in parts)
        sd_models.list_models()
        from modules import scripts

        scripts.KEEP_ROOT_ON_PATH = True  # reForge / Classic keep extension roots on sys.path
        # a checkpoint change in Settings reloads through the queue
        shared.opts.onchange("sd_model_checkpoint",
                             call_queue.wrap_queued_call(lambda: sd_models.reload_model_weights()), call=False)
    finally:
        for p in (str(WEBUI), str(WEBUI / "lora")):
            sys.path.remove(p)
    fake = FakeLdmPatched(profile)
    fake.renderer.step_hook = None
    try:
        if load:
            sd_models.load_model()
        yield fake
    finally:
        fake.renderer.step_hook = None
        shutil.rmtree(sd_models.model_path, ignore_errors=True)
        for k in [k for k in sys.modules if _owned(k)]:
            del sys.modules[k]
        sys.modules.update(stashed)
