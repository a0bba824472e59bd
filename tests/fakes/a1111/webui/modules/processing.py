"""Fake of ``modules/processing.py`` (A1111 v1.10.1, 82a973c0), txt2img only.

Reproduced: class-level cond caches ``[key, value]`` shared by every instance, keyed by
prompts/steps/size/options and the ``sd_checkpoint_info`` *object* (never by weights), kept
across ``close()`` while ``opts.persistent_cond_cache``; ``process_images`` reloading the
checkpoint at its start (or once after a valid ``sd_model_checkpoint`` override) and per batch,
overrides set with ``opts.set(..., run_callbacks=False)`` and restored by plain ``setattr``;
seeds ``seed + i``; ``<lora:...>`` tags stripped always, networks activated only without
``disable_extra_networks``; Lora-patched leaves "run" before each use; partial (not missing)
images after ``state.interrupt()``; no grid with ``do_not_save_grid``.
"""

import dataclasses
import json
import random

import torch

from modules import (
    _tiny_ldm,
    devices,
    extra_networks,
    sd_models,
    sd_samplers,
    sd_unet,
    sd_vae,
    shared,
)
from modules.shared import opts, state


def get_fixed_seed(seed):
    if seed in (None, "", -1):
        return int(random.randrange(4294967294))
    return int(seed)


@dataclasses.dataclass(repr=False)
class StableDiffusionProcessing:
    prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    overlay_images: list = None
    negative_prompt: str = ""
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image = None
    scripts_value = None
    script_args_value: list = None
    outpath_samples: str = None
    outpath_grids: str = None

    cached_uc = [None, None]  # noqa: RUF012 - class-level on purpose, as in A1111
    cached_c = [None, None]  # noqa: RUF012 - class-level on purpose, as in A1111

    def __post_init__(self):
        self.styles = self.styles or []
        self.override_settings = dict(self.override_settings or {})
        self.extra_generation_params = self.extra_generation_params or {}
        self.cached_uc = StableDiffusionProcessing.cached_uc
        self.cached_c = StableDiffusionProcessing.cached_c
        self.c = None
        self.uc = None

    @property
    def sd_model(self):
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None):
        return (tuple(required_prompts), steps, hires_steps, False, opts.CLIP_stop_at_last_layers,
                shared.sd_model.sd_checkpoint_info, repr(extra_network_data), opts.sdxl_crop_left,
                opts.sdxl_crop_top, self.width, self.height, opts.fp8_storage, opts.cache_fp16_weight,
                opts.emphasis)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data,
                               hires_steps=None):
        key = self.cached_params(required_prompts, steps, extra_network_data, hires_steps)
        for cache in caches:
            if cache[0] is not None and cache[0] == key:
                return cache[1]
        cache = caches[0]
        with devices.autocast(), torch.no_grad():
            cache[1] = function(required_prompts)
        cache[0] = key
        return cache[1]

    def setup_conds(self, prompts, negative_prompts, extra_network_data):
        m = shared.sd_model
        self.uc = self.get_conds_with_caching(m.get_learned_conditioning, negative_prompts, self.steps,
                                              [self.cached_uc], extra_network_data)
        self.c = self.get_conds_with_caching(m.get_learned_conditioning, prompts, self.steps,
                                             [self.cached_c], extra_network_data)

    def close(self):
        self.c = None
        self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]


@dataclasses.dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str = None
    hr_sampler_name: str = None
    hr_scheduler: str = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""

    cached_hr_uc = [None, None]  # noqa: RUF012 - class-level on purpose, as in A1111
    cached_hr_c = [None, None]  # noqa: RUF012 - class-level on purpose, as in A1111

    def __post_init__(self):
        super().__post_init__()
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def close(self):
        super().close()
        if not opts.persistent_cond_cache:
            StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
            StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]


class Processed:
    def __init__(self, p, images_list, infotexts):
        self.images = images_list
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.all_seeds = p.all_seeds
        self.all_subseeds = p.all_subseeds
        self.all_prompts = p.all_prompts
        self.all_negative_prompts = p.all_negative_prompts
        self.seed = p.all_seeds[0] if p.all_seeds else -1
        self.sd_model_hash = shared.sd_model.sd_model_hash
        self.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra


def quote(text):
    """``infotext_utils.quote``: JSON-quote a value holding a comma, a newline or a colon."""
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(p, index):
    m = shared.sd_model
    params = [("Steps", p.steps), ("Sampler", p.sampler_name), ("Schedule type", p.scheduler),
              ("CFG scale", p.cfg_scale), ("Seed", p.all_seeds[index]), ("Size", f"{p.width}x{p.height}"),
              ("Model hash", m.sd_model_hash), ("Model", m.sd_checkpoint_info.name_for_extra),
              *p.extra_generation_params.items(), ("Version", "v1.10.1")]
    text = ", ".join(f"{k}: {quote(str(v))}" for k, v in params if v is not None)
    neg = f"\nNegative prompt: {p.all_negative_prompts[index]}" if p.all_negative_prompts[index] else ""
    return f"{p.all_prompts[index]}{neg}\n{text}"


def process_images(p):
    stored_opts = {k: opts.data.get(k, opts.get_default(k)) for k in p.override_settings}
    try:
        ckpt = p.override_settings.get("sd_model_checkpoint")
        if ckpt is not None and sd_models.checkpoint_aliases.get(ckpt) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
        if "sd_model_checkpoint" not in p.override_settings:
            sd_models.reload_model_weights()
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()
            if k == "sd_vae":
                sd_vae.reload_vae_weights()
        sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)


def _rows(cond, j):
    """Row ``j`` of a cond: a tensor (SD1) or SDXL's dict (``DictWithShape``)."""
    if isinstance(cond, dict):
        return {k: v[j : j + 1] for k, v in cond.items()}
    return cond[j : j + 1]


def process_images_inner(p):
    n = p.batch_size * p.n_iter
    seed = get_fixed_seed(p.seed)
    subseed = get_fixed_seed(p.subseed)
    p.all_seeds = [seed + i if p.subseed_strength == 0 else seed for i in range(n)]
    p.all_subseeds = [subseed + i for i in range(n)]
    p.all_prompts = [p.prompt] * n
    p.all_negative_prompts = [p.negative_prompt] * n
    if state.job_count == -1:
        state.job_count = p.n_iter
    sd_unet.apply_unet()
    images, infotexts = [], []
    for batch in range(p.n_iter):
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        sd_models.reload_model_weights()
        m = shared.sd_model
        sl = slice(batch * p.batch_size, (batch + 1) * p.batch_size)
        prompts, extra_network_data = extra_networks.parse_prompts(p.all_prompts[sl])
        negative_prompts = p.all_negative_prompts[sl]
        p.all_prompts[sl] = prompts
        if not p.disable_extra_networks:
            extra_networks.activate(p, extra_network_data)
        p.setup_conds(prompts, negative_prompts, extra_network_data)
        _tiny_ldm.run_layers(m.model)
        _tiny_ldm.run_layers(m.first_stage_model)
        for j in range(p.batch_size):
            index = batch * p.batch_size + j
            m.renderer.sync(m.live_checkpoint_tensors(), ("model.diffusion_model.", "first_stage_model."))
            image = m.renderer.sample(
                _rows(p.c, j), _rows(p.uc, j), seed=p.all_seeds[index], steps=p.steps,
                cfg_scale=p.cfg_scale, width=p.width, height=p.height, sampler=p.sampler_name,
                scheduler=p.scheduler, state=state)
            images.append(image)
            infotexts.append(create_infotext(p, index))
        state.nextjob()
    return Processed(p, images, infotexts)
