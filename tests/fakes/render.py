"""Renders a fake WebUI's images from its live weights (shared by every fake WebUI profile).

One tiny diffusers pipeline (``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``) per
diffusers config folder is loaded once per test session. A fake hands it the live tensors
before each use, in one of two layouts:

- ``sync(tensors)``: checkpoint keys (``model.diffusion_model.*``, ``cond_stage_model.*``,
  ``conditioner.embedders.*``, ``first_stage_model.*``), copied through the core's derived
  LDM/SGM <-> diffusers key map (``sd_optim.hosts.diffusers_keymap``);
- ``sync_component(component, tensors)``: diffusers names of one pipeline component
  (``text_encoder``: ``text_model.*``; ``text_encoder_2``: ``text_model.*`` and
  ``text_projection.weight``), for fakes that hold the HF ``CLIPTextModel`` layout as Forge does.

Conditioning and sampling are separate calls, so a fake's cond caches decide which
text-encoder state a picture shows. ``encode`` returns a tensor (SD1) or a dict
``{"crossattn": ..., "vector": ...}`` (SDXL, as A1111's SDXL conditioner does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from sd_optim.hosts import diffusers_keymap as km
from sd_optim.hosts.diffusers_host import make_scheduler

_CACHE: dict = {}


class Renderer:
    def __init__(self, arch: str, checkpoint, config_dir):
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if arch not in ("sd1-ldm", "sdxl-sgm"):
            raise ValueError(f"arch must be sd1-ldm or sdxl-sgm, got {arch!r}")
        self.arch = arch
        self.is_sdxl = arch == "sdxl-sgm"
        kwargs = {"config": str(config_dir), "local_files_only": True, "torch_dtype": torch.float32}
        if self.is_sdxl:
            self.pipe = StableDiffusionXLPipeline.from_single_file(str(checkpoint), **kwargs)
        else:
            self.pipe = StableDiffusionPipeline.from_single_file(
                str(checkpoint), safety_checker=None, requires_safety_checker=False, **kwargs)
        self.pipe.set_progress_bar_config(disable=True)
        self.rules = km.derive_keymap(arch, self.pipe.unet.config, self.pipe.vae.config)
        components = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if self.is_sdxl else ())
        self.targets = {c: getattr(self.pipe, c).state_dict() for c in components}
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.step_hook: Callable[[int], None] | None = None  # tests: called at each sampling step

    # --- weights ------------------------------------------------------------------------------

    def sync(self, tensors: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("",)) -> None:
        """Copy checkpoint-layout tensors whose key starts with one of ``prefixes``."""
        with torch.no_grad():
            for key, rule in self.rules.items():
                if not key.startswith(prefixes) or key not in tensors:
                    continue
                dst = [self.targets[t.component][t.name] for t in rule.targets]
                value = tensors[key].detach()
                for d, s in zip(dst, km.split(rule, value, [d.shape for d in dst])):
                    d.copy_(s.to(d.dtype))

    def sync_component(self, component: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy tensors named as in the pipeline component's own state dict."""
        target = self.targets[component]
        with torch.no_grad():
            for name, value in tensors.items():
                if name in target:
                    target[name].copy_(value.detach().to(target[name].dtype))

    # --- running ------------------------------------------------------------------------------

    def encode(self, prompts: list[str]):
        with torch.no_grad():
            if self.is_sdxl:
                embeds, _, pooled, _ = self.pipe.encode_prompt(
                    list(prompts), device="cpu", num_images_per_prompt=1,
                    do_classifier_free_guidance=False)
                return {"crossattn": embeds, "vector": pooled}
            embeds, _ = self.pipe.encode_prompt(list(prompts), "cpu", 1, False)
            return embeds

    def sample(self, c, uc, *, seed, steps, cfg_scale, width, height, sampler, scheduler, state):
        """One image from conds ``c``/``uc`` (one row each). Honors ``state.interrupted`` /
        ``state.skipped`` between steps the way A1111's samplers do: the latent so far is
        decoded and returned (a partial image, not none)."""
        self.pipe.scheduler = make_scheduler(sampler, scheduler or "Automatic", self.scheduler_config)
        state.sampling_steps = steps

        def on_step(pipe, i, t, kwargs):
            state.sampling_step = i + 1
            if self.step_hook is not None:
                self.step_hook(i)
            if state.interrupted or state.skipped:
                pipe._interrupt = True
            return {}

        kwargs = {}
        if self.is_sdxl:
            kwargs = {"prompt_embeds": c["crossattn"], "negative_prompt_embeds": uc["crossattn"],
                      "pooled_prompt_embeds": c["vector"], "negative_pooled_prompt_embeds": uc["vector"]}
        else:
            kwargs = {"prompt_embeds": c, "negative_prompt_embeds": uc}
        with torch.inference_mode():
            out = self.pipe(num_inference_steps=steps, guidance_scale=cfg_scale, width=width,
                            height=height, generator=torch.Generator().manual_seed(int(seed)),
                            output_type="pil", callback_on_step_end=on_step, **kwargs)
        return out.images[0]


def renderer_for(arch: str, checkpoint, config_dir) -> Renderer:
    """The session's renderer for ``config_dir`` (its weights are whatever was synced last)."""
    key = (arch, str(config_dir))
    if key not in _CACHE:
        _CACHE[key] = Renderer(arch, checkpoint, config_dir)
    r = _CACHE[key]
    r.step_hook = None
    return r


def cond_rows(cond, i: int):
    """Row ``i`` of a cond as returned by :meth:`Renderer.encode` (tensor or SDXL dict)."""
    if isinstance(cond, dict):
        return {k: v[i : i + 1] for k, v in cond.items()}
    return cond[i : i + 1]
