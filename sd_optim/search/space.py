"""The search space: from the optimization guide to named Optuna parameters, and back.

:func:`build_search_space` is a pure function of (config, model config id); it touches no
model file, so the tab can preview the parameter list before anything runs.

Generated names (stable: studies, resume and fork depend on them):

=========================  ==========================================  ======================
strategy                   one parameter per                           name
=========================  ==========================================  ======================
``all`` / ``select``       block (items: blocks)                       ``diffuser.IN04.alpha``
``all`` / ``select``       key (items: keys)                           ``clip_l.<key>.alpha``
``group``                  named group of patterns                     ``diffuser.<group>.alpha``
``single``                 component                                   ``clip_l.all.alpha``
``none``                   nothing: held at ``fixed`` or the default   (none)
=========================  ==========================================  ======================

Recipe mode names its sites by the node's index in the serialized recipe: ``&7.alpha`` and
``&7.alpha[IN04]`` (see :mod:`sd_optim.search.recipe_mode`).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..config import Bounds, RunConfig, Strategy
from ..errors import Problem, SpaceError, short_repr
from . import block_defs
from . import blocks as blocks_mod
from .methods import Hyper, method_signature, resolve_method


@dataclass(frozen=True)
class ParamSpec:
    name: str
    hyper: str
    component: str
    item: str
    keys: tuple[str, ...]
    distribution: BaseDistribution
    default: Any  # the method's default, inside the distribution when possible


@dataclass
class PerKey:
    """A hyperparameter whose value varies by key; keys not listed take ``default``."""

    values: dict[str, Any]
    default: Any


@dataclass
class SearchSpace:
    model_config: str
    hypers: dict[str, Hyper]
    params: list[ParamSpec]
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # hyper -> key -> value
    defaults: dict[str, Any] = field(default_factory=dict)  # hyper -> value for unclaimed keys
    notes: list[str] = field(default_factory=list)
    fixed_names: list[str] = field(default_factory=list)  # generated names held by guide.bounds

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution for p in self.params}

    def describe(self) -> list[str]:
        return [f"{p.name}  {_describe(p.distribution)}  ({len(p.keys)} keys)" for p in self.params]

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides what a parameter set means: names, ranges, the keys each
        parameter covers, and the values held fixed."""
        def digest(keys) -> str:
            return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]

        return {
            "params": {p.name: f"{_describe(p.distribution)} keys:{digest(p.keys)}" for p in self.params},
            "fixed": {h: {f"{v!r}": digest(k for k, x in kv.items() if x == v) for v in set(kv.values())}
                      for h, kv in sorted(self.fixed.items())},
            "defaults": {h: repr(v) for h, v in sorted(self.defaults.items())},
        }

    def hyper_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Trial params -> per hyperparameter a scalar or a :class:`PerKey`."""
        missing = [p.name for p in self.params if p.name not in params]
        if missing:
            raise KeyError(f"trial parameters missing: {', '.join(missing)}")
        out: dict[str, Any] = {}
        for hyper in self.hypers:
            per_key: dict[str, Any] = dict(self.fixed.get(hyper, {}))
            for p in self.params:
                if p.hyper == hyper:
                    for key in p.keys:
                        per_key[key] = params[p.name]
            default = self.defaults.get(hyper)
            if not per_key:
                out[hyper] = default
            elif len(set(per_key.values())) == 1 and self._covers_all(per_key):
                out[hyper] = next(iter(per_key.values()))
            else:
                out[hyper] = PerKey(per_key, default)
        return out

    def _covers_all(self, per_key: dict[str, Any]) -> bool:
        from sd_mecha.extensions import model_configs

        return len(per_key) >= len(model_configs.resolve(self.model_config).keys())

    def midpoint(self) -> dict[str, Any]:
        return {p.name: _midpoint(p.distribution) for p in self.params}

    def default_point(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _describe(d: BaseDistribution) -> str:
    if isinstance(d, CategoricalDistribution):
        return f"choice{list(d.choices)}"
    kind = "int" if isinstance(d, IntDistribution) else "float"
    extra = " log" if d.log else (f" step {d.step}" if d.step else "")
    return f"{kind}[{d.low}, {d.high}]{extra}"


def _midpoint(d: BaseDistribution) -> Any:
    if isinstance(d, CategoricalDistribution):
        return d.choices[len(d.choices) // 2]
    if d.log:
        import math

        mid = math.sqrt(d.low * d.high)
    else:
        mid = (d.low + d.high) / 2
    if isinstance(d, IntDistribution):
        return round(mid)
    if d.step:
        mid = d.low + round((mid - d.low) / d.step) * d.step
    return mid


def _inside(d: BaseDistribution, value: Any) -> bool:
    if isinstance(d, CategoricalDistribution):
        return value in d.choices
    return isinstance(value, (int, float)) and d.low <= value <= d.high


def make_distribution(where: str, hyper: Hyper, b: Bounds | None) -> BaseDistribution:
    """Bounds + the hyperparameter's type -> an Optuna distribution (SpaceError if impossible)."""
    b = b or Bounds()
    if b.choices:
        return CategoricalDistribution(tuple(b.choices))
    if hyper.kind == "int":
        if b.low is None or b.high is None:
            raise SpaceError([Problem(where, f"integer hyperparameter {hyper.name!r} needs explicit bounds "
                                             f"(guide.bounds.{hyper.name}: {{low: .., high: ..}})")])
        return IntDistribution(int(b.low), int(b.high), log=b.log, step=int(b.step or 1))
    low = hyper.span[0] if b.low is None else float(b.low)
    high = hyper.span[1] if b.high is None else float(b.high)
    if b.low is None and b.high is None and hyper.default is not None and not low <= hyper.default <= high:
        raise SpaceError([Problem(where, f"the default of {hyper.name!r} ({hyper.default}) lies outside [{low:g}, "
                                         f"{high:g}]; give guide.bounds.{hyper.name}: {{low: .., high: ..}}")])
    if low >= high:
        raise SpaceError([Problem(where, f"low must be < high for {hyper.name!r}, got [{low}, {high}]")])
    return FloatDistribution(low, high, log=b.log, step=b.step)


def tunable_hypers(config: RunConfig) -> tuple[dict[str, Hyper], dict[str, Any], list[str]]:
    """(hyperparameters that may be tuned, their defaults, notes) for merge mode."""
    method = resolve_method(config.merge.method)
    _, hypers = method_signature(method)
    defaults = {h.name: h.default for h in hypers.values()}
    defaults.update(config.merge.fixed)
    unknown = [k for k in config.merge.fixed if k not in hypers]
    if unknown:
        raise SpaceError([f"merge.fixed.{k}: {config.merge.method} has no numeric hyperparameter "
                          f"{k!r} (it has: {', '.join(hypers) or 'none'})" for k in unknown])
    wrong = [p for k, v in config.merge.fixed.items()
             if (p := _fixed_type_problem(config.merge.method, hypers[k], v))]
    if wrong:
        raise SpaceError(wrong)
    tunable, notes = {}, []
    for name, h in hypers.items():
        if name in config.merge.fixed:
            continue
        explicitly = name in config.guide.bounds or any(
            name in s.params for strategies in config.guide.components.values() for s in strategies)
        if h.kind == "int" and not explicitly:
            notes.append(f"{name}: integer, not tuned unless guide.bounds.{name} gives low and high")
            continue
        if h.default is not None and not 0 <= h.default <= 1 and not explicitly:
            notes.append(f"{name}: default {h.default} outside [0, 1], not tuned unless bounds are given")
            continue
        tunable[name] = h
    return tunable, defaults, notes


def _fixed_type_problem(method: str, hyper: Hyper, value: Any) -> str:
    """A ``merge.fixed`` value the method's signature cannot take (sd-mecha would fail every
    trial on it, at merge time)."""
    if value is None:
        return ""
    if hyper.kind == "int":
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if ok:
        return ""

    takes = "an int" if hyper.kind == "int" else "a float"
    return f"merge.fixed.{hyper.name}: must be {want} ({method} takes {takes}), got {short_repr(value)}"


def build_search_space(config: RunConfig, model_config: str) -> SearchSpace:
    """The merge-mode search space of ``config`` for a model of ``model_config``."""
    hypers, defaults, notes = tunable_hypers(config)
    block_defs.ensure_registered(config.resolve_path(config.blocks_dir) if config.blocks_dir else None)
    space = SearchSpace(model_config, hypers, [], {}, defaults, notes)
    all_components = blocks_mod.components(model_config)
    problems: list[str] = []
    claims: dict[tuple[str, str], str] = {}  # (hyper, key) -> strategy label
    for comp, strategies in config.guide.components.items():
        if comp not in all_components:
            problems.append(Problem(f"guide.{comp}", f"not a component of {model_config} (components: "
                                                     f"{', '.join(all_components)})"))
            continue
        for i, strategy in enumerate(strategies):
            where = f"guide.{comp}[{i}]"
            try:
                _apply_strategy(space, config, comp, where, strategy, claims)
            except SpaceError as e:
                problems.extend(e.problems)
    if not problems:
        _check_bounds_names(space, config, problems)
    if problems:
        raise SpaceError(problems)
    return space


def _items(config: RunConfig, model_config: str, comp: str, strategy: Strategy, where: str
           ) -> tuple[str, dict[str, tuple[str, ...]]]:
    block_config = config.guide.blocks or blocks_mod.default_block_config(model_config)
    kind = strategy.items or ("blocks" if block_config else "keys")
    if kind == "blocks":
        if not block_config:
            raise SpaceError([Problem(f"{where}.items", f"{model_config} has no block config; use items: "
                                                        "keys")])
        try:
            return kind, blocks_mod.component_blocks(block_config, model_config, comp)
        except ValueError as e:
            known = [b for b in block_defs.registered_block_configs() if b.startswith(model_config.split("-")[0] + "-")]
            raise SpaceError([Problem("guide.blocks", f"{e} (block configs: {', '.join(known)})", block_config)]) from None
    return kind, {k: (k,) for k in blocks_mod.component_keys(model_config, comp)}


def _match(items: dict[str, tuple[str, ...]], patterns: list[str], where: str) -> list[str]:
    out = []
    for pat in patterns:
        hits = [name for name in items if fnmatch.fnmatchcase(name, pat)]
        if not hits:
            sample = ", ".join(list(items)[:8])
            raise SpaceError([Problem(where, f"pattern matches nothing, got {pat!r} (items include "
                                             f"{sample})")])
        out.extend(h for h in hits if h not in out)
    return out


def _apply_strategy(space: SearchSpace, config: RunConfig, comp: str, where: str,
                    strategy: Strategy, claims: dict) -> None:
    _kind, items = _items(config, space.model_config, comp, strategy, where)
    hyper_names = strategy.params or list(space.hypers)
    bad = [h for h in hyper_names if h not in space.hypers]
    if bad:
        raise SpaceError([f"{where}.params: not a tunable hyperparameter of {config.merge.method}, "
                          f"got {h!r} (tunable: {', '.join(space.hypers) or 'none'})" for h in bad])
    label = f"{where} ({strategy.strategy})"
    units: list[tuple[str, tuple[str, ...]]] = []  # (item name, keys)
    if strategy.strategy == "all":
        units = list(items.items())
    elif strategy.strategy == "select":
        units = [(name, items[name]) for name in _match(items, strategy.patterns, f"{where}.patterns")]
    elif strategy.strategy == "group":
        for gname, pats in strategy.groups.items():
            names = _match(items, pats, f"{where}.groups.{gname}")
            units.append((gname, tuple(k for n in names for k in items[n])))
    elif strategy.strategy == "single":
        units = [("all", tuple(k for keys in items.values() for k in keys))]
    elif strategy.strategy == "none":
        names = _match(items, strategy.patterns, f"{where}.patterns") if strategy.patterns else list(items)
        keys = tuple(k for n in names for k in items[n])
        unknown = [h for h in strategy.fixed if h not in space.defaults]
        if unknown:
            raise SpaceError([f"{where}.fixed.{h}: not a hyperparameter of {config.merge.method}"
                              for h in unknown])
        for hyper in hyper_names:
            _claim(claims, hyper, keys, label)
            if hyper in strategy.fixed:
                space.fixed.setdefault(hyper, {}).update({k: strategy.fixed[hyper] for k in keys})
        return
    for hyper_name in hyper_names:
        hyper = space.hypers[hyper_name]
        for item, keys in units:
            _claim(claims, hyper_name, keys, label)
            name = f"{comp}.{item}.{hyper_name}"
            own = config.guide.bounds.get(name)
            if own is not None and own.fixed is not None:  # held at a value, not tuned
                space.fixed.setdefault(hyper_name, {}).update({k: own.fixed for k in keys})
                space.fixed_names.append(name)
                continue
            b = own or config.guide.bounds.get(hyper_name)
            dist = make_distribution(f"guide.bounds.{name}", hyper, b)
            default = space.defaults.get(hyper_name)
            if not _inside(dist, default):
                default = _midpoint(dist)
            space.params.append(ParamSpec(name, hyper_name, comp, item, tuple(keys), dist, default))


def _claim(claims: dict, hyper: str, keys: tuple[str, ...], label: str) -> None:
    for key in keys:
        prev = claims.get((hyper, key))
        if prev is not None and prev != label:
            raise SpaceError([Problem(label, f"it and {prev} both claim {hyper!r} of key {key!r}; "
                                             "a key may be tuned by one strategy only")])
        claims[(hyper, key)] = label


def _check_bounds_names(space: SearchSpace, config: RunConfig, problems: list[str]) -> None:
    """Every ``guide.bounds`` entry must name a hyperparameter or a generated parameter, so a
    typo is an error, not a silently ignored range; ``fixed`` belongs on generated names."""
    generated = {p.name for p in space.params} | set(space.fixed_names)
    for name, b in config.guide.bounds.items():
        if name in space.hypers:
            if b.fixed is not None:
                problems.append(Problem(f"guide.bounds.{name}.fixed", "to hold a hyperparameter for every "
                                                                      f"key use merge.fixed.{name}"))
        elif name not in generated:
            near = difflib.get_close_matches(name, sorted(generated | set(space.hypers)), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(Problem(f"guide.bounds.{name}", "not a tuned hyperparameter or generated "
                                                            f"parameter name{hint}"))


def map_point(source: SearchSpace, values: dict[str, Any], target: SearchSpace) -> dict[str, Any]:
    """A parameter set of ``source`` as one of ``target``, by the keys each parameter covers: a
    target parameter takes the value of the source parameters of its hyperparameter that cover
    its keys (their mean weighted by the keys they share, for numbers; the one sharing the most
    otherwise), brought inside its range. Target parameters no source parameter overlaps are left
    out (the sampler draws them). So a coarse optimum (one ``alpha`` for the whole UNet) starts a
    block-wise search with every block at that value."""
    point: dict[str, Any] = {}
    for t in target.params:
        keys = set(t.keys)
        shared = [(len(keys.intersection(s.keys)), values[s.name]) for s in source.params
                  if s.hyper == t.hyper and s.name in values and keys.intersection(s.keys)]
        if not shared:
            continue
        d = t.distribution
        if isinstance(d, CategoricalDistribution):
            value = max(shared, key=lambda x: x[0])[1]
            if value in d.choices:
                point[t.name] = value
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in shared):
            continue
        same = {v for _, v in shared}  # one value: itself, exactly (a mean of equal floats may not be)
        mean = same.pop() if len(same) == 1 else sum(n * float(v) for n, v in shared) / sum(n for n, _ in shared)
        inside = min(max(mean, d.low), d.high)
        if getattr(d, "step", None):  # onto the range's grid
            inside = min(d.low + round((inside - d.low) / d.step) * d.step, d.high)
        point[t.name] = round(inside) if isinstance(d, IntDistribution) else inside
    return point
