"""Warm starts: parameter sets a new study tries first.

``optimizer.start_from``: parameter sets given by name (the sliders a user already likes); the
parameters a set does not name are drawn by the sampler. ``optimizer.start_from_study``: the
result of another study (its confirmation winner, else its best trial) mapped onto this run's
search space by the keys each parameter covers (:func:`sd_optim.search.space.map_point`), so a
coarse study (one weight for the whole UNet, or a few groups) starts a block-wise one at its
optimum: coarse to fine in two runs. ``optimizer.coarse_trials`` does both in one run: the
runner's coarse stage runs :func:`coarse_config`, then the run goes on as :func:`fine_config`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from ..config import AfterRun, RunConfig, Strategy
from ..errors import ConfigError, Problem
from ..search.planning import make_planner
from ..search.space import SearchSpace, map_point
from .exporting import load_run
from .study import FINGERPRINT_ATTR, chosen_trial

START_ATTR = "sd_optim.start_from"  # on an enqueued warm-start trial: where its values came from
COARSE_SUFFIX = "-coarse"  # optimizer.coarse_trials: the coarse stage's study is "<study>-coarse"


def start_points(config: RunConfig, space: SearchSpace) -> list[tuple[dict[str, Any], str]]:
    """The warm-start parameter sets of ``config`` with where each came from; one
    :class:`ConfigError` naming every field that does not fit."""
    opt, dists = config.optimizer, space.distributions()
    problems: list[Problem] = []
    points = []
    for i, point in enumerate(opt.start_from):
        found = point_problems(f"optimizer.start_from[{i}]", point, dists)
        problems += found
        if not found:
            points.append((dict(point), f"start_from[{i}]"))
    if opt.start_from_study:
        try:
            points.append(study_point(config, space))
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return points


def point_problems(where: str, point: dict[str, Any], dists: dict[str, BaseDistribution]) -> list[Problem]:
    """Each name of ``point`` a parameter of the space, each value inside its range."""
    problems = []
    for name, value in point.items():
        if name not in dists:
            near = difflib.get_close_matches(name, list(dists), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append(Problem(f"{where}.{name}", f"not a parameter of this run ({hint}parameters: "
                                                       f"{', '.join(list(dists)[:8])}{', …' if len(dists) > 8 else ''})"))
            continue
        message = _outside(dists[name], value)
        if message:
            problems.append(Problem(f"{where}.{name}", message, value))
    return problems


def _outside(d: BaseDistribution, value: Any) -> str:
    """Why ``value`` is not a value of ``d`` ("" when it is)."""
    if isinstance(d, CategoricalDistribution):
        return "" if value in d.choices else f"must be one of {', '.join(map(repr, d.choices))}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if isinstance(d, IntDistribution) and not float(value).is_integer():
        return "must be an integer"
    if not d.low <= value <= d.high:
        return f"must be within [{d.low}, {d.high}]"
    return ""


def study_point(config: RunConfig, space: SearchSpace) -> tuple[dict[str, Any], str]:
    """``optimizer.start_from_study``'s result as a parameter set of ``space``."""
    name, field = config.optimizer.start_from_study, "optimizer.start_from_study"
    try:
        study, source_config = load_run(config.resolve_path(config.output_dir), name, config.optimizer.storage)
    except ConfigError as e:
        raise ConfigError([Problem(field, p.message, name) for p in e.problems]) from None
    try:
        trial = chosen_trial(study)
    except ValueError:
        raise ConfigError([Problem(field, "that study has no completed trial yet", name)]) from None
    model_config = study.user_attrs.get(FINGERPRINT_ATTR, {}).get("model_config", space.model_config)
    if model_config != space.model_config:
        raise ConfigError([Problem(field, f"that study merged {model_config} models, this run "
                                          f"{space.model_config}", name)])
    source = make_planner(source_config, model_config).space
    point = map_point(source, dict(trial.params), space)
    if not point:
        raise ConfigError([Problem(field, "none of its parameters covers the keys of this run's parameters "
                                          "(another method's hyperparameters, or other components)", name)])
    return point, f"study {name} trial {trial.number}"


def coarse_config(config: RunConfig, study: str) -> RunConfig:
    """The coarse stage of ``optimizer.coarse_trials``, as a run of its own (study ``study``): one
    value per component and hyperparameter (the guide's ``single``; a component whose strategies
    are all ``none`` keeps them), bounds by hyperparameter name only, the baselines and pruner of
    the run; no other warm start, no confirmation, nothing kept or saved after it."""
    c = copy.deepcopy(config)
    for component, strategies in config.guide.components.items():
        tuned = [s for s in strategies if s.strategy != "none"]
        if tuned:  # the union of the hyperparameters they tune (all when one names none)
            params = [] if any(not s.params for s in tuned) else sorted({p for s in tuned for p in s.params})
            c.guide.components[component] = [Strategy("single", items=tuned[0].items, params=params)]
    c.guide.bounds = {name: b for name, b in c.guide.bounds.items() if "." not in name}
    opt = c.optimizer
    opt.study, opt.trials, opt.coarse_trials = study, config.optimizer.coarse_trials, 0
    opt.start_from, opt.start_from_study, opt.confirm_top = [], "", 0
    c.after_run = AfterRun()
    return c


def fine_config(config: RunConfig, study: str, coarse_study: str, trials: int) -> RunConfig:
    """The run after its coarse stage: the guide's space in study ``study``, ``trials`` trials,
    started from the coarse study's result (``start_from_study``: what its config.yaml records)."""
    c = copy.deepcopy(config)
    opt = c.optimizer
    opt.study, opt.trials, opt.coarse_trials, opt.start_from_study = study, trials, 0, coarse_study
    opt.score_inputs = False  # the coarse stage scored them
    return c
