"""Planners turn trial parameters into recipes: one for merge mode, one for recipe mode."""

from __future__ import annotations

from typing import Any, Protocol

from ..config import ModelInput, RunConfig
from ..errors import ConfigError, Problem, SpaceError
from ..files.inputs import check_inputs
from .recipe_mode import RecipePlanner
from .recipes import RecipeError, build_merge_recipe, model_node, recipe_text
from .space import SearchSpace, build_search_space


class Planner(Protocol):
    space: SearchSpace
    label: str  # the method name, or the recipe file's stem

    def fingerprint(self) -> dict[str, Any]: ...

    def recipe(self, params: dict[str, Any]): ...

    def recipe_text(self, params: dict[str, Any]) -> str: ...

    def model_recipe(self, model: ModelInput): ...


class MergePlanner:
    def __init__(self, config: RunConfig, model_config: str):
        self.config = config
        self.model_config = model_config
        self.space = build_search_space(config, model_config)
        if not self.space.params:
            raise SpaceError([Problem("guide", "no parameter to tune; add a strategy, e.g. guide: "
                                               "{diffuser: [all], clip_l: [single]}")])
        self.label = config.merge.method
        self._check_recipe()

    def _check_recipe(self) -> None:
        """Build one recipe now, so a wrong model count or a missing base fails before the run."""
        try:
            self.recipe(self.space.default_point())
        except (RecipeError, ValueError) as e:
            raise ConfigError([Problem("merge.method", str(e), self.config.merge.method)]) from None

    def fingerprint(self) -> dict[str, Any]:
        return {"method": self.config.merge.method, "fixed": self.config.merge.fixed}

    def recipe(self, params):
        return build_merge_recipe(self.config, self.space, params)

    def recipe_text(self, params) -> str:
        return recipe_text(self.recipe(params))

    def model_recipe(self, model: ModelInput):
        return model_node(self.config.resolve_path(model.path), self.model_config)


def make_planner(config: RunConfig, model_config: str) -> Planner:
    check_inputs(config, model_config)
    if config.mode == "recipe":
        return RecipePlanner(config, model_config)
    return MergePlanner(config, model_config)
