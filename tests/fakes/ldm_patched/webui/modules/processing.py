"""Fake of ``modules/processing.py`` for the ldm_patched family, txt2img only.

Reproduced (reForge 3b56b268 :157,193-194,425-431,461-557,898-1045; Forge Classic 1f95d717
:193-194,416-419,741-872; Forge ``previous`` bfee03d8 :192-193,741-861):
- the dataclass fields; ``scheduler`` exists only in reForge (A1111 1.10 base), so passing it in
  Classic/previous raises ``TypeError``;
- class-level cond caches shared by every instance, ``[key, cond, extra]`` (3 slots) in reForge and
  ``[key, cond]`` (2 slots) in Classic/previous, keyed by prompts/steps/size/options and the
  ``sd_checkpoint_info`` *object*, never by weights; ``close()`` resets them to 2 slots unless
  ``opts.persistent_cond_cache``; no ``clear_prompt_cache``;
- ``process_images``: reloads (a no-op on a matching checkpoint), applies ``override_settings``
  with ``opts.set(..., run_callbacks=False)`` and restores them; reForge then auto-corrects bad
  sampler/scheduler names, Classic/previous assert on a bad sampler name;
- per batch: reload, ``forge_objects = forge_objects_original.shallow_copy()``, extra networks
  only without ``disable_extra_networks``, then ``forge_objects = forge_objects_after_applying_lora
  .shallow_copy()`` **always**; conds; sampling loads the UNet patcher (baking its patches) and
  decoding the VAE patcher; a partial image after ``state.interrupt()``.
The schedule of a Classic/previous sampler name is rendered as its base sampler + schedule type.
"""

import dataclasses
import json
import random

import torch
from modules_forge import forge_version

from modules import devices, extra_networks, sd_models, sd_samplers, shared
from modules.shared import opts, state

REFORGE = forge_version.version.startswith("1.0.0v2")
_SLOTS = 3 if REFORGE else 2
_SCHEDULE_LABELS = {"karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform"}


def get_fixed_seed(seed):
    if seed in (None, "", -1):
        return int(random.randrange(4294967294))
    return int(seed)


_FIELDS = [
    ("prompt", str, ""), ("styles", list, None), ("seed", int, -1), ("subseed", int, -1),
    ("subseed_strength", float, 0), ("seed_resize_from_h", int, -1), ("seed_resize_from_w", int, -1),
    ("seed_enable_extras", bool, True), ("sampler_name", str, None),
    *([("scheduler", str, None)] if REFORGE else []),
    ("batch_size", int, 1), ("n_iter", int, 1), ("steps", int, 50), ("cfg_scale", float, 7.0),
    ("width", int, 512), ("height", int, 512), ("restore_faces", bool, None), ("tiling", bool, None),
    ("do_not_save_samples", bool, False), ("do_not_save_grid", bool, False),
    ("extra_generation_params", dict, None), ("overlay_images", list, None), ("negative_prompt", str, ""),
    ("eta", float, None), ("do_not_reload_embeddings", bool, False), ("denoising_strength", float, None),
    ("override_settings", dict, None), ("override_settings_restore_afterwards", bool, True),
    ("sampler_index", int, None), ("refiner_checkpoint", str, None), ("refiner_switch_at", float, None),
    ("disable_extra_networks", bool, False), ("comments", dict, None),
]


class _Base:
    cached_uc = [None] * _SLOTS
    cached_c = [None] * _SLOTS

    def __post_init__(self):
        self.styles = self.styles or []
        self.override_settings = dict(self.override_settings or {})
        self.extra_generation_params = self.extra_generation_params or {}
        self.cached_uc = StableDiffusionProcessing.cached_uc
        self.cached_c = StableDiffusionProcessing.cached_c
        self.scripts = None
        self.c = None
        self.uc = None

    @property
    def sd_model(self):
        return shared.sd_model

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None):
        return (tuple(required_prompts), steps, hires_steps, opts.CLIP_stop_at_last_layers,
                shared.sd_model.sd_checkpoint_info, repr(extra_network_data), opts.sdxl_crop_left,
                opts.sdxl_crop_top, self.width, self.height)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data,
                               hires_steps=None):
        key = self.cached_params(required_prompts, steps, extra_network_data, hires_steps)
        for cache in caches:
            if cache[0] is not None and cache[0] == key:
                return cache[1]
        cache = caches[0]
        with devices.autocast(), torch.no_grad():
            cache[1] = function(required_prompts)
            if len(cache) > 2:
                cache[2] = {}
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


StableDiffusionProcessing = dataclasses.make_dataclass(
    "StableDiffusionProcessing", [(n, t, dataclasses.field(default=d)) for n, t, d in _FIELDS],
    bases=(_Base,), repr=False)


class _Txt2ImgBase:
    cached_hr_uc = [None] * _SLOTS
    cached_hr_c = [None] * _SLOTS

    def __post_init__(self):
        super().__post_init__()
        self.cached_hr_uc = StableDiffusionProcessingTxt2Img.cached_hr_uc
        self.cached_hr_c = StableDiffusionProcessingTxt2Img.cached_hr_c

    def close(self):
        super().close()
        if not opts.persistent_cond_cache:
            StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
            StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]


StableDiffusionProcessingTxt2Img = dataclasses.make_dataclass(
    "StableDiffusionProcessingTxt2Img",
    [("enable_hr", bool, dataclasses.field(default=False)), ("hr_scale", float, dataclasses.field(default=2.0)),
     ("hr_checkpoint_name", str, dataclasses.field(default=None))],
    bases=(_Txt2ImgBase, StableDiffusionProcessing), repr=False)


class Processed:
    def __init__(self, p, images_list, infotexts):
        self.images = images_list
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.all_seeds = p.all_seeds
        self.seed = p.all_seeds[0] if p.all_seeds else -1
        self.sd_model_hash = shared.sd_model.sd_model_hash


def _quote(text):
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(p, index):
    m = shared.sd_model
    params = [("Steps", p.steps), ("Sampler", p.sampler_name),
              *([("Schedule type", p.scheduler)] if REFORGE else []),
              ("CFG scale", p.cfg_scale), ("Seed", p.all_seeds[index]), ("Size", f"{p.width}x{p.height}"),
              ("Model hash", m.sd_model_hash), ("Model", m.sd_checkpoint_info.name_for_extra),
              *p.extra_generation_params.items(), ("Version", forge_version.version)]
    text = ", ".join(f"{k}: {_quote(str(v))}" for k, v in params if v is not None)
    neg = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    return f"{p.all_prompts[index]}{neg}\n{text}"


def process_images(p):
    stored_opts = {k: opts.data.get(k, opts.get_default(k)) for k in p.override_settings}
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get("sd_model_checkpoint")) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()
        if REFORGE:
            sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)


def _render_names(p):
    """The renderer's (sampler, schedule type) for the WebUI's sampler."""
    if REFORGE:
        return p.sampler_name, p.scheduler
    config = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
    schedule = config.options.get("scheduler")
    base = p.sampler_name
    for word in (" Karras", " Exponential", " SGMUniform", " Turbo"):
        base = base.removesuffix(word)
    return base, _SCHEDULE_LABELS.get(schedule, "Automatic")


def _sample(m, p, index):
    from ldm_patched.modules import model_management

    sampler, schedule = _render_names(p)
    unet = m.forge_objects.unet
    model_management.load_models_gpu([unet])
    m.renderer.sync({"model.diffusion_model." + n: w for n, w in unet.model.diffusion_model.named_parameters()},
                    ("model.diffusion_model.",))
    m.decode_first_stage()
    kwargs = {"seed": p.all_seeds[index], "steps": p.steps, "cfg_scale": p.cfg_scale, "width": p.width,
              "height": p.height, "state": state}
    try:
        return m.renderer.sample(p.c, p.uc, sampler=sampler, scheduler=schedule, **kwargs)
    except ValueError:  # the tiny renderer knows fewer samplers than the WebUI: sample with Euler
        return m.renderer.sample(p.c, p.uc, sampler="Euler", scheduler="Automatic", **kwargs)


def process_images_inner(p):
    n = p.batch_size * p.n_iter
    seed = get_fixed_seed(p.seed)
    p.all_seeds = [seed + i if p.subseed_strength == 0 else seed for i in range(n)]
    p.all_prompts = [p.prompt] * n
    if state.job_count == -1:
        state.job_count = p.n_iter
    images, infotexts = [], []
    for batch in range(p.n_iter):
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        sd_models.reload_model_weights()
        m = shared.sd_model
        m.forge_objects = m.forge_objects_original.shallow_copy()
        prompts, extra_network_data = extra_networks.parse_prompts(p.all_prompts[batch:batch + 1])
        p.all_prompts[batch] = prompts[0]
        if not p.disable_extra_networks:
            extra_networks.activate(p, extra_network_data)
        m.forge_objects = m.forge_objects_after_applying_lora.shallow_copy()
        p.setup_conds(prompts, [p.negative_prompt], extra_network_data)
        images.append(_sample(m, p, batch))
        infotexts.append(create_infotext(p, batch))
        state.nextjob()
    return Processed(p, images, infotexts)
