"""Fake of ``modules/sd_schedulers.py`` (Forge dfdcbab6, ``:211-230``): the schedule types."""

import dataclasses


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: object = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


schedulers = [Scheduler(n, label) for n, label in [
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"),
    ("exponential", "Exponential"), ("polyexponential", "Polyexponential"),
    ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"), ("align_your_steps", "Align Your Steps"),
    ("simple", "Simple"), ("normal", "Normal"), ("ddim", "DDIM"), ("beta", "Beta"), ("turbo", "Turbo"),
    ("align_your_steps_GITS", "Align Your Steps GITS"), ("align_your_steps_11", "Align Your Steps 11"),
    ("align_your_steps_32", "Align Your Steps 32"),
]]
schedulers[5].aliases = ["SGMUniform"]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
