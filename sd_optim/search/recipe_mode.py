"""Recipe mode: tune the hyperparameters of a loaded ``.mecha`` recipe.

Every numeric literal that feeds a ``param``-space argument of a merge node is a *site*,
named by the node's index in the serialized recipe: ``&7.alpha`` for a scalar, and
``&7.alpha[IN04]`` for one entry of a per-block or per-key dict (looking through converters
such as ``convert_sd1_blocks_to_ldm`` and through ``fallback`` defaults). Trial values are
substituted by rebuilding the graph; the loaded recipe is never mutated.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sd_mecha
from sd_mecha.recipe_nodes import LiteralRecipeNode, MergeRecipeNode, RecipeNode
from sd_mecha.serialization import SerializerVisitor

from ..config import ModelInput, RunConfig
from ..errors import ConfigError, Problem, SpaceError, shorten
from ..files.inputs import file_hash
from . import adjust
from .graph import model_paths, rebuild
from .methods import Hyper, method_signature
from .recipes import model_node, recipe_text, trusted_literal
from .space import ParamSpec, SearchSpace, make_distribution


@dataclass(frozen=True)
class Site:
    name: str  # "&7.alpha" or "&7.alpha[IN04]"
    node: str  # "&7"
    method: str
    param: str
    kind: str  # "float" | "int"
    literal_id: int
    key: str  # the literal's dict key ("key" for scalars)
    value: Any


class _Indexer(SerializerVisitor):
    def __init__(self):
        super().__init__()
        self.refs: dict[int, str] = {}

    def visit_merge(self, node):
        ref = super().visit_merge(node)
        self.refs.setdefault(id(node), ref)
        return ref


def _literals_behind(node: RecipeNode) -> list[tuple[LiteralRecipeNode, bool]]:
    """Numeric literals feeding an argument: (literal, is_fallback_default)."""
    if isinstance(node, LiteralRecipeNode):
        return [(node, False)]
    if isinstance(node, MergeRecipeNode):
        mm = node.merge_method
        if mm.identifier == "fallback":
            a, default = node.bound_args.arguments["a"], node.bound_args.arguments["default"]
            return _literals_behind(a) + [(lit, True) for lit, _ in _literals_behind(default)]
        if mm.identifier.startswith("convert_") and len(node.bound_args.args) == 1:
            return _literals_behind(node.bound_args.args[0])
    return []


def find_sites(recipe: RecipeNode) -> list[Site]:
    indexer = _Indexer()
    recipe.accept(indexer)
    sites: list[Site] = []
    seen_literals: set[int] = set()
    for node in recipe:
        if not isinstance(node, MergeRecipeNode) or id(node) not in indexer.refs:
            continue
        ref = indexer.refs[id(node)]
        _, hypers = method_signature(node.merge_method)
        for pname, hyper in hypers.items():
            arg = node.bound_args.arguments.get(pname)
            if arg is None:
                continue
            for lit, _is_default in _literals_behind(arg):
                if id(lit) in seen_literals:
                    continue
                seen_literals.add(id(lit))
                singleton = lit.model_config is None or lit.model_config.identifier == "singleton-mecha"
                for key, value in lit.value_dict.items():
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    name = f"{ref}.{pname}" if singleton else f"{ref}.{pname}[{key}]"
                    if any(s.name == name for s in sites):  # e.g. literal(0.3) | 0.6: two scalars
                        name = f"{ref}.{pname}[default]"
                    sites.append(Site(name, ref, node.merge_method.identifier, pname, hyper.kind,
                                      id(lit), key, value))
    return sites


def _selected(site: Site, include: list[str], exclude: list[str]) -> bool:
    def hit(patterns):
        return any(fnmatch.fnmatchcase(x, p) for p in patterns
                   for x in (site.name, site.method, site.param, site.node))
    return hit(include) and not hit(exclude)


def read_recipe_file(path: Path) -> str:
    """The text of a ``.mecha`` file; ConfigError naming ``recipe.path`` when it is not text."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem("recipe.path", "not a .mecha recipe (not UTF-8 text)", str(path))]) from None
    except OSError as e:
        raise ConfigError([Problem("recipe.path", f"cannot read it: {e.strerror or e}", str(path))]) from None


class RecipePlanner:
    def __init__(self, config: RunConfig, model_config: str):
        self.config = config
        self.model_config = model_config
        path = config.resolve_path(config.recipe.path)
        text = read_recipe_file(path)
        try:
            self.source = sd_mecha.deserialize(text.rstrip("\n").split("\n"))
        except Exception as e:  # noqa: BLE001 - sd-mecha raises several types for a bad file
            raise ConfigError([Problem("recipe.path", f"{path.name} is not a valid .mecha recipe "
                                                      f"({shorten(str(e))})")]) from None
        self.label = path.stem
        self.sites = find_sites(self.source)
        chosen = [s for s in self.sites
                  if _selected(s, config.guide.recipe_include, config.guide.recipe_exclude)]
        params, problems = [], []
        for s in chosen:
            b = config.guide.bounds.get(s.name) or config.guide.bounds.get(s.param)
            if b is not None and b.fixed is not None:
                continue
            try:
                span = adjust.SPAN if s.method == adjust.METHOD else (0.0, 1.0)
                dist = make_distribution(f"guide.bounds.{s.name}", Hyper(s.param, s.kind, s.value, span), b)
            except SpaceError as e:
                problems.extend(e.problems)
                continue
            params.append(ParamSpec(s.name, s.param, "", s.name, (), dist, s.value))
        known = {s.name for s in self.sites} | {s.param for s in self.sites}
        for name in config.guide.bounds:
            if name not in known:
                problems.append(Problem(f"guide.bounds.{name}", "not a site or parameter name of "
                                                                f"{path.name} (sites: "
                                                                f"{', '.join(s.name for s in self.sites) or 'none'})"))
        if not params and not problems:
            problems.append(Problem("guide.recipe", f"no site of {path.name} to tune (sites: "
                                                    f"{', '.join(s.name for s in self.sites) or 'none'}; "
                                                    f"include: {config.guide.recipe_include}, exclude: "
                                                    f"{config.guide.recipe_exclude})"))
        missing = [str(p) for p in model_paths(self.source) if not Path(p).is_file()]
        if missing:
            problems.append(Problem("recipe.path", f"{path.name} uses models that do not exist: "
                                                   f"{', '.join(missing)}"))
        if problems:
            raise SpaceError(problems)
        self.space = SearchSpace(model_config, {}, params)
        self._fixed = {s.name: config.guide.bounds[s.name].fixed for s in chosen
                       if s.name in config.guide.bounds and config.guide.bounds[s.name].fixed is not None}
        self._text = text

    def fingerprint(self) -> dict[str, Any]:
        return {"recipe": recipe_text(self.source), "fixed": self._fixed,
                "recipe_models": [file_hash(p) for p in model_paths(self.source)]}

    def recipe(self, params: dict[str, Any]):
        values = {**self._fixed, **params}
        by_literal: dict[int, dict[str, Any]] = {}
        for s in self.sites:
            if s.name in values:
                by_literal.setdefault(s.literal_id, {})[s.key] = values[s.name]

        def replace(lit: LiteralRecipeNode):
            new = by_literal.get(id(lit))
            if not new:
                return None
            return trusted_literal({**lit.value_dict, **new}, lit.model_config, lit.merge_space)

        return rebuild(self.source, on_literal=replace)

    def recipe_text(self, params) -> str:
        return recipe_text(self.recipe(params))

    def model_recipe(self, model: ModelInput):
        return model_node(self.config.resolve_path(model.path), self.model_config)
