"""Fake of ``modules/sd_samplers.py`` with the sampler lists of each profile.

- reForge 3b56b268 (A1111 1.10 base): ``sd_samplers_kdiffusion.py:22``, ``sd_samplers_timesteps``,
  ``sd_samplers_lcm``, ``modules_forge/forge_alter_samplers.py``; ``fix_p_invalid_sampler_and_scheduler``
  auto-corrects unknown names (:176-180), logging only a warning.
- Forge Classic 1f95d717 / Forge ``previous`` bfee03d8 (A1111 1.8 base): names carry the schedule
  (``sd_samplers_kdiffusion.py:13``, options ``{'scheduler': 'karras'}``); no schedule types;
  ``create_sampler`` asserts ``bad sampler name``.
"""

from collections import namedtuple

from modules_forge import forge_version

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

REFORGE = forge_version.version.startswith("1.0.0v2")

_REFORGE = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
    "Euler A2", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "Euler Dy",
    "Euler SMEA Dy", "Euler Negative", "Euler Negative Dy",
    "DDIM", "DDIM CFG++", "PLMS", "PLMS CFG++", "UniPC", "LCM",
    "DPM++ SDE Classic", "ER SDE", "Kohaku_LoNyu_Yog", "Euler CFG++", "Euler Ancestral CFG++",
    "DPM++ 2S Ancestral CFG++", "DPM++ 2M CFG++", "DPM++ SDE CFG++", "DPM++ 3M SDE CFG++", "Euler DY CFG++",
    "Euler SMEA DY CFG++", "Euler A DY CFG++", "DPM++ 2M DY CFG++", "RES Multistep", "RES Multistep CFG++",
    "RES Multistep Ancestral", "RES Multistep Ancestral CFG++", "Gradient Estimation",
    "Gradient Estimation CFG++", "SEEDS 2 DP", "SEEDS 3 DP", "SA-Solver", "SA-Solver-Pece",
    "Kohaku_LoNyu_Yog CFG++", "DPM++ 2M DY", "DPM++ 3M DY", "DPM++ 3M SDE DY", "DDPM", "HeunPP2", "IPNDM",
    "IPNDM_V", "DEIS", "RES Solver", "ODE (Bosh3)", "ODE (Fehlberg2)", "ODE (Adaptive Heun)", "ODE (Dopri5)",
    "ODE Custom", "Euler A Turbo", "DPM++ 2M Turbo", "DPM++ 2M SDE Turbo", "Euler Comfy", "Euler A Comfy",
    "Euler A Comfy RF", "Heun Comfy", "DPM++ 2S Ancestral Comfy", "DPM++ 2S Ancestral Comfy RF",
    "DPM++ SDE Comfy", "DPM++ 2M Comfy", "DPM++ 2M SDE Comfy", "DPM++ 3M SDE Comfy",
    "CLYB 4M SDE Momentumized", "DPM++ 2S Ancestral CFG++ Dyn", "DPM++ 2S Ancestral CFG++ Intern",
    "Custom Sampler",
]
# (name, schedule it embeds) of Classic/previous
_CLASSIC = [
    ("DPM++ 2M Karras", "karras"), ("DPM++ SDE Karras", "karras"), ("DPM++ 2M SDE Exponential", "exponential"),
    ("DPM++ 2M SDE Karras", "karras"), ("Euler a", None), ("Euler", None), ("LMS", None), ("Heun", None),
    ("DPM2", None), ("DPM2 a", None), ("DPM++ 2S a", None), ("DPM++ 2M", None), ("DPM++ SDE", None),
    ("DPM++ 2M SDE", None), ("DPM++ 2M SDE Heun", None), ("DPM++ 2M SDE Heun Karras", "karras"),
    ("DPM++ 2M SDE Heun Exponential", "exponential"), ("DPM++ 3M SDE", None), ("DPM++ 3M SDE Karras", "karras"),
    ("DPM++ 3M SDE Exponential", "exponential"), ("DPM fast", None), ("DPM adaptive", None),
    ("LMS Karras", "karras"), ("DPM2 Karras", "karras"), ("DPM2 a Karras", "karras"),
    ("DPM++ 2S a Karras", "karras"), ("Restart", "karras"), ("DDIM", None), ("PLMS", None), ("UniPC", None),
    ("LCM", None), ("DDPM", "normal"), ("DDPM Karras", "karras"), ("Euler A Turbo", "turbo"),
    ("DPM++ 2M Turbo", "turbo"), ("DPM++ 2M SDE Turbo", "turbo"), ("LCM Karras", "karras"),
    ("Euler SGMUniform", "sgm_uniform"), ("Euler A SGMUniform", "sgm_uniform"),
    ("DPM++ 2M SGMUniform", "sgm_uniform"), ("DPM++ 2M SDE SGMUniform", "sgm_uniform"),
]

if REFORGE:
    all_samplers = [SamplerData(n, None, [], {}) for n in _REFORGE]
else:
    all_samplers = [SamplerData(n, None, [], {"scheduler": s} if s else {}) for n, s in _CLASSIC]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map = {x.name.lower(): x.name for x in all_samplers}


def find_sampler_config(name):
    return all_samplers_map.get(name) if name is not None else all_samplers[0]


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    return config


if REFORGE:
    def fix_p_invalid_sampler_and_scheduler(p):
        from modules import sd_schedulers

        if p.sampler_name not in all_samplers_map:
            p.sampler_name = "DPM++ 2M"
        sched = sd_schedulers.schedulers_map.get(p.scheduler or "Automatic")
        p.scheduler = sched.label if sched is not None else "Automatic"
