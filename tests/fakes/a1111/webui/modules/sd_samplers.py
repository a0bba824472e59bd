"""Fake of ``modules/sd_samplers.py`` (A1111 v1.10.1, 82a973c0): the 1.10 sampler names, in order."""

from collections import namedtuple

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

_NAMES = [
    ("DPM++ 2M", ["k_dpmpp_2m"]), ("DPM++ SDE", ["k_dpmpp_sde"]), ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"]),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"]), ("DPM++ 2S a", ["k_dpmpp_2s_a"]),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"]), ("Euler a", ["k_euler_a", "k_euler_ancestral"]),
    ("Euler", ["k_euler"]), ("LMS", ["k_lms"]), ("Heun", ["k_heun"]), ("DPM2", ["k_dpm_2"]),
    ("DPM2 a", ["k_dpm_2_a"]), ("DPM fast", ["k_dpm_fast"]), ("DPM adaptive", ["k_dpm_ad"]),
    ("Restart", ["restart"]),
    ("DDIM", ["ddim"]), ("DDIM CFG++", ["ddim_cfgpp"]), ("PLMS", ["plms"]), ("UniPC", ["unipc"]),
    ("LCM", ["k_lcm"]),
]

all_samplers = [SamplerData(name, None, aliases, {}) for name, aliases in _NAMES]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map = {}
for _s in all_samplers:
    samplers_map[_s.name.lower()] = _s.name
    for _alias in _s.aliases:
        samplers_map[_alias.lower()] = _s.name


def fix_p_invalid_sampler_and_scheduler(p):
    """Unknown names fall back to DPM++ 2M / Automatic (A1111 logs a warning)."""
    from modules import sd_schedulers

    if p.sampler_name not in all_samplers_map:
        p.sampler_name = "DPM++ 2M"
    sched = sd_schedulers.schedulers_map.get(p.scheduler or "Automatic")
    p.scheduler = sched.label if sched is not None else "Automatic"
