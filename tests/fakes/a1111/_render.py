"""Renders the fake A1111's images from its live LDM-layout weights.

One tiny diffusers ``StableDiffusionPipeline`` per (checkpoint architecture, config folder) is
loaded once per test session; before each use the fake model's live tensors are copied into it
through the core's derived LDM <-> diffusers key map. Conditioning and sampling are separate
calls, so the fake's cond caches decide which text-encoder state a picture shows.
"""

from __future__ import annotations

import torch

from sd_optim.hosts import diffusers_keymap as km
from sd_optim.hosts.diffusers_host import make_scheduler

_CACHE: dict = {}


def _checkpoint_name(name: str) -> str:
    return ".".join(s for s in name.split(".") if s != "wrapped")


class Renderer:
    def __init__(self, checkpoint, config_dir):
        from diffusers import StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_single_file(
            str(checkpoint), config=str(config_dir), local_files_only=True, torch_dtype=torch.float32,
            safety_checker=None, requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.rules = km.derive_keymap("sd1-ldm", self.pipe.unet.config, self.pipe.vae.config)
        self.targets = {c: getattr(self.pipe, c).state_dict() for c in ("unet", "vae", "text_encoder")}
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.step_hook = None  # tests: called with the step index inside sampling

    def _sync(self, model, prefixes: tuple[str, ...]) -> None:
        live = {_checkpoint_name(n): p for n, p in model.named_parameters()}
        with torch.no_grad():
            for key, rule in self.rules.items():
                if not key.startswith(prefixes) or key not in live:
                    continue
                dst = [self.targets[t.component][t.name] for t in rule.targets]
                for d, s in zip(dst, km.split(rule, live[key].detach(), [d.shape for d in dst])):
                    d.copy_(s)

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        self._sync(model, ("cond_stage_model.",))
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(prompts, "cpu", 1, False)
        return embeds

    def sample(self, model, c, uc, *, seed, steps, cfg_scale, width, height, sampler, scheduler, state):
        self._sync(model, ("model.diffusion_model.", "first_stage_model."))
        self.pipe.scheduler = make_scheduler(sampler, scheduler, self.scheduler_config)
        self.pipe.scheduler.num_inference_steps = steps
        state.sampling_steps = steps

        def on_step(pipe, i, t, kwargs):
            state.sampling_step = i + 1
            if self.step_hook is not None:
                self.step_hook(i)
            if state.interrupted or state.skipped:
                pipe._interrupt = True  # later steps are skipped; the latent so far is decoded
            return {}

        with torch.inference_mode():
            out = self.pipe(prompt_embeds=c, negative_prompt_embeds=uc, num_inference_steps=steps,
                            guidance_scale=cfg_scale, width=width, height=height,
                            generator=torch.Generator().manual_seed(int(seed)), output_type="pil",
                            callback_on_step_end=on_step)
        return out.images[0]


def renderer_for(checkpoint, config_dir) -> Renderer:
    key = str(config_dir)
    if key not in _CACHE:
        _CACHE[key] = Renderer(checkpoint, config_dir)
    return _CACHE[key]
