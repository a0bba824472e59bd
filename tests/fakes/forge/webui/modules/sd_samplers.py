"""Fake of ``modules/sd_samplers.py`` (Forge dfdcbab6, ``:11-16``): ``all_samplers`` in Forge's order
(k-diffusion ``sd_samplers_kdiffusion.py:14-34``, timesteps ``sd_samplers_timesteps.py:14-17``,
``LCM``, ``DDPM`` from ``modules_forge/alter_samplers.py``) and the silent name fix-up
(``fix_p_invalid_sampler_and_scheduler``, ``:137-141``)."""

from collections import namedtuple

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

_NAMES = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
          "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
          "HeunPP2", "IPNDM", "IPNDM_V", "DEIS", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM", "DDPM"]

all_samplers = [SamplerData(name, None, [], {}) for name in _NAMES]
all_samplers_map = {x.name: x for x in all_samplers}


def find_sampler_config(name):
    return all_samplers_map.get(name)


def fix_p_invalid_sampler_and_scheduler(p):
    from modules import sd_schedulers

    if p.sampler_name not in all_samplers_map:
        print(f"Sampler {p.sampler_name!r} not found; using 'Euler a'")  # Forge only warns
        p.sampler_name = "Euler a"
    if sd_schedulers.schedulers_map.get(p.scheduler) is None:
        p.scheduler = "Automatic"
