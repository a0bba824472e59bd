"""Fake of ``modules/sd_schedulers.py`` of reForge 3b56b268 (:343, its 25 schedule types). Forge Classic
and Forge ``previous`` (A1111 1.8 base) have no such module: importing it there fails."""

import dataclasses

from modules_forge import forge_version

if not forge_version.version.startswith("1.0.0v2"):
    raise ModuleNotFoundError("No module named 'modules.sd_schedulers'", name="modules.sd_schedulers")


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    aliases: list = None


_NAMES = [
    ("automatic", "Automatic"), ("karras", "Karras"), ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"), ("sinusoidal_sf", "Sinusoidal SF"),
    ("invcosinusoidal_sf", "Invcosinusoidal SF"), ("react_cosinusoidal_dynsf", "React Cosinusoidal DynSF"),
    ("uniform", "Uniform"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"), ("simple", "Simple"),
    ("normal", "Normal"), ("ddim", "DDIM"), ("align_your_steps", "Align Your Steps"),
    ("align_your_steps_custom", "Align Your Steps Custom"), ("beta", "Beta"), ("turbo", "Turbo"),
    ("cosine", "Cosine"), ("cosine-exponential blend", "Cosine-exponential Blend"), ("phi", "Phi"),
    ("laplace", "Laplace"), ("karras dynamic", "Karras Dynamic"), ("align_your_steps_GITS", "Align Your Steps GITS"),
    ("align_your_steps_11", "Align Your Steps 11"), ("align_your_steps_32", "Align Your Steps 32"),
]
schedulers = [Scheduler(n, label, ["SGMUniform"] if n == "sgm_uniform" else None) for n, label in _NAMES]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
