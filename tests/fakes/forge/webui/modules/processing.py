"""Fake of ``modules/processing.py`` (Forge dfdcbab6), txt2img only.

Reproduced: the dataclass fields of ``StableDiffusionProcessing`` (``:128-176``, incl.
``scheduler``, ``distilled_cfg_scale=3.5``, ``disable_extra_networks``) and
``StableDiffusionProcessingTxt2Img`` (``:1186-1207``, incl. ``hr_additional_modules``, ``hr_cfg``,
``hr_distilled_cfg``, ``force_task_id``), unknown keywords raising ``TypeError``; class-level
3-slot cond caches aliased by instances, keyed by prompts/steps/size/options and the
``sd_checkpoint_info`` object, never by weights (``:175-176``, ``:420-438``, ``:1206-1207``);
``clear_prompt_cache`` (base lists only, ``:218-222``); ``close`` resetting to 2-slot lists unless
``opts.persistent_cond_cache`` (``:385-390``); ``need_global_unload`` and
``manage_model_and_prompt_cache`` (``:801-812``); ``process_images`` (``:815-849``: overrides via
``set_config``, model management, silent sampler fix-up) and ``process_images_inner``
(``:852-1010``): per iteration ``forge_model_reload()``, ``forge_objects = original``, extra
networks unless disabled, ``forge_objects = forge_objects_after_applying_lora`` (always),
conds, sampling from the live UNet, decoding with the live VAE; ``state.interrupted`` /
``stopping_generation`` end the loop (a partial image from an interrupted sampler is kept).
"""

import json
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from backend import memory_management
from fakes.render import cond_rows

from modules import extra_networks, sd_models, sd_samplers, shared
from modules.shared import opts, state
from modules.sysinfo import set_config

need_global_unload = False


def get_fixed_seed(seed):
    if seed in (None, "", -1):
        return int(random.randrange(4294967294))
    return int(seed)


@dataclass(repr=False)
class StableDiffusionProcessing:
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    prompt_for_display: str = None
    negative_prompt: str = ""
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
    distilled_cfg_scale: float = 3.5
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] = None
    overlay_images: list = None
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    ddim_discretize: str = None
    s_min_uncond: float = None
    s_churn: float = None
    s_tmax: float = None
    s_tmin: float = None
    s_noise: float = None
    override_settings: dict[str, Any] = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image: Any = None

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)

    cached_uc = [None, None, None]  # noqa: RUF012 - class-level on purpose, as in Forge
    cached_c = [None, None, None]  # noqa: RUF012 - class-level on purpose, as in Forge

    def clear_prompt_cache(self):
        self.cached_c = [None, None, None]
        self.cached_uc = [None, None, None]
        StableDiffusionProcessing.cached_c = [None, None, None]
        StableDiffusionProcessing.cached_uc = [None, None, None]

    def __post_init__(self):
        self.styles = self.styles or []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
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
        return (tuple(required_prompts), self.distilled_cfg_scale, getattr(self, "hr_distilled_cfg", None),
                steps, hires_steps, False, opts.CLIP_stop_at_last_layers, shared.sd_model.sd_checkpoint_info,
                repr(extra_network_data), opts.sdxl_crop_left, opts.sdxl_crop_top, self.width, self.height,
                opts.fp8_storage, opts.cache_fp16_weight, opts.emphasis)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data):
        key = self.cached_params(required_prompts, steps, extra_network_data)
        for cache in caches:
            if cache[0] is not None and cache[0] == key:
                return cache[1]
        cache = caches[0]
        with torch.inference_mode():
            cache[1] = function(required_prompts)
        cache[0] = key
        return cache[1]

    def setup_conds(self):
        m = shared.sd_model
        self.uc = self.get_conds_with_caching(m.get_learned_conditioning, self.negative_prompts, self.steps,
                                              [self.cached_uc], self.extra_network_data)
        self.c = self.get_conds_with_caching(m.get_learned_conditioning, self.prompts, self.steps,
                                             [self.cached_c], self.extra_network_data)

    def close(self):
        self.c = None
        self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]


@dataclass(repr=False)
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
    hr_additional_modules: list = field(default=None)
    hr_sampler_name: str = None
    hr_scheduler: str = None
    hr_prompt: str = ''
    hr_negative_prompt: str = ''
    hr_cfg: float = 1.0
    hr_distilled_cfg: float = 3.5
    force_task_id: str = None

    cached_hr_uc = [None, None, None]  # noqa: RUF012 - class-level on purpose, as in Forge
    cached_hr_c = [None, None, None]  # noqa: RUF012 - class-level on purpose, as in Forge

    def __post_init__(self):
        super().__post_init__()
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def sample(self, conditioning, unconditional_conditioning, seeds):
        m = self.sd_model
        fo = m.forge_objects
        memory_management.load_models_gpu([fo.unet])
        memory_management.load_model_gpu(fo.vae.patcher)
        live = {"model.diffusion_model." + k: v for k, v in fo.unet.model.diffusion_model.named_parameters()}
        live.update({"first_stage_model." + k: v for k, v in fo.vae.first_stage_model.named_parameters()})
        m.renderer.sync(live, ("model.diffusion_model.", "first_stage_model."))
        return m.renderer.sample(conditioning, unconditional_conditioning, seed=seeds[0], steps=self.steps,
                                 cfg_scale=self.cfg_scale, width=self.width, height=self.height,
                                 sampler=self.sampler_name, scheduler=self.scheduler, state=state)


class Processed:
    def __init__(self, p, images_list, infotexts):
        self.images = images_list
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.all_seeds = p.all_seeds
        self.seed = p.all_seeds[0] if p.all_seeds else -1
        self.sd_model_hash = shared.sd_model.sd_model_hash
        self.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra


def quote(text):
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(p, index):
    m = shared.sd_model
    params = [("Steps", p.steps), ("Sampler", p.sampler_name), ("Schedule type", p.scheduler),
              ("CFG scale", p.cfg_scale), ("Seed", p.all_seeds[index]), ("Size", f"{p.width}x{p.height}"),
              ("Model hash", m.sd_model_hash), ("Model", m.sd_checkpoint_info.name_for_extra),
              *p.extra_generation_params.items(), ("Version", "f2.0.1v1.10.1")]
    text = ", ".join(f"{k}: {quote(str(v))}" for k, v in params if v is not None)
    neg = f"\nNegative prompt: {p.all_negative_prompts[index]}" if p.all_negative_prompts[index] else ""
    return f"{p.all_prompts[index]}{neg}\n{text}"


def manage_model_and_prompt_cache(p):
    global need_global_unload

    p.sd_model, just_reloaded = sd_models.forge_model_reload()
    if need_global_unload and not just_reloaded:
        memory_management.unload_all_models()
    if need_global_unload:
        p.clear_prompt_cache()
    need_global_unload = False


def process_images(p):
    stored_opts = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get('sd_model_checkpoint')) is None:
            p.override_settings.pop('sd_model_checkpoint', None)
        set_config(p.override_settings, is_api=True, run_callbacks=False, save_config=False)
        manage_model_and_prompt_cache(p)
        sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            set_config(stored_opts, save_config=False)


def process_images_inner(p):
    n = p.batch_size * p.n_iter
    seed = get_fixed_seed(p.seed)
    p.all_seeds = [seed + i if p.subseed_strength == 0 else seed for i in range(n)]
    p.all_prompts = [p.prompt] * n
    p.all_negative_prompts = [p.negative_prompt] * n
    if state.job_count == -1:
        state.job_count = p.n_iter
    images, infotexts = [], []
    for it in range(p.n_iter):
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        sd_models.forge_model_reload()
        m = p.sd_model
        m.forge_objects = m.forge_objects_original.shallow_copy()
        sl = slice(it * p.batch_size, (it + 1) * p.batch_size)
        p.prompts, p.extra_network_data = extra_networks.parse_prompts(p.all_prompts[sl])
        p.negative_prompts = p.all_negative_prompts[sl]
        if not p.disable_extra_networks:
            extra_networks.activate(p, p.extra_network_data)
        m.forge_objects = m.forge_objects_after_applying_lora.shallow_copy()
        p.setup_conds()
        p.extra_generation_params.update(m.extra_generation_params)
        for j in range(p.batch_size):
            index = it * p.batch_size + j
            image = p.sample(cond_rows(p.c, j), cond_rows(p.uc, j), [p.all_seeds[index]])
            images.append(image)
            infotexts.append(create_infotext(p, index))
        state.nextjob()
    return Processed(p, images, infotexts)
