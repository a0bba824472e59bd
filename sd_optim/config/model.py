"""The run config's dataclasses: one YAML file (or the tab's controls) describing a whole run.

Plain dataclasses, no pydantic (A1111 ships pydantic 1, Forge pydantic 2). The reader
(:mod:`sd_optim.config.reader`) builds them from plain data and validates everything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("merge", "recipe")
STRATEGIES = ("all", "select", "group", "single", "none")
ITEM_KINDS = ("blocks", "keys")
SAMPLERS = ("tpe", "cmaes", "gp", "qmc", "random", "grid")
MEANS = ("arithmetic", "geometric", "quadratic")
BASELINES = ("defaults", "midpoint")
ON_ERROR = ("continue", "stop")
SCORER_PATH_OPTIONS = ("folder", "head", "clip")  # scorer options that name files: relative to the config


@dataclass
class ModelInput:
    path: str
    name: str = ""


@dataclass
class LoraInput:
    path: str
    apply_to: str = ""  # a model name; the first model when empty
    strength: float = 1.0


@dataclass
class MergeSettings:
    method: str = "weighted_sum"
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecipeSettings:
    path: str = ""


@dataclass
class Bounds:
    """Overrides for one hyperparameter name or one generated parameter name."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    fixed: Any = None


@dataclass
class Strategy:
    strategy: str
    items: str = ""  # "blocks" or "keys"; default: blocks where the model has a block config
    patterns: list[str] = field(default_factory=list)  # select / none
    groups: dict[str, list[str]] = field(default_factory=dict)  # group
    params: list[str] = field(default_factory=list)  # restrict which hyperparameters
    fixed: dict[str, Any] = field(default_factory=dict)  # none: values to hold


@dataclass
class Guide:
    components: dict[str, list[Strategy]] = field(default_factory=dict)
    bounds: dict[str, Bounds] = field(default_factory=dict)
    blocks: str = ""  # block config id; default: the model's supermerger blocks
    recipe_include: list[str] = field(default_factory=lambda: ["*"])
    recipe_exclude: list[str] = field(default_factory=list)


@dataclass
class Payload:
    """A prompt set ("payloads" in the config file, "Prompt sets" in the tab)."""

    name: str
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    width: int = 512
    height: int = 512
    batch_size: int = 1
    weight: float = 1.0
    scorers: list[str] = field(default_factory=list)  # empty: every scorer


@dataclass
class ScorerSettings:
    name: str
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoringSettings:
    scorer_mean: str = "arithmetic"
    payload_mean: str = "arithmetic"


@dataclass
class EarlyStopping:
    patience: int = 0  # trials without improvement before stopping; 0 = off
    min_improvement: float = 0.0


@dataclass
class OptimizerSettings:
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 20
    seed: int | None = None
    storage: str = ""  # an Optuna storage URL; default SQLite in the run folder
    study: str = ""  # study name; default derived from the method and models
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    baseline: list[str] = field(default_factory=list)
    score_inputs: bool = False
    on_trial_error: str = "continue"


@dataclass
class AfterRun:
    """What happens to the WebUI's model when a run ends (the original is restored by default)."""

    keep_best: bool = False  # leave the best trial's merge loaded instead of restoring
    save_best: bool = False  # write the best trial as a checkpoint into the WebUI's checkpoint folder
    save_name: str = ""  # file name stem for save_best; default "<study>-trial<N>"


@dataclass
class RunConfig:
    models: list[ModelInput]
    payloads: list[Payload]
    scorers: list[ScorerSettings]
    mode: str = "merge"
    loras: list[LoraInput] = field(default_factory=list)
    base_model: str = ""
    host_model: str = ""
    diffusers_config: str = ""
    merge: MergeSettings = field(default_factory=MergeSettings)
    recipe: RecipeSettings = field(default_factory=RecipeSettings)
    guide: Guide = field(default_factory=Guide)
    wildcards_dir: str = ""
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    after_run: AfterRun = field(default_factory=AfterRun)
    output_dir: str = "runs"
    models_dir: str = ""  # scorer weights folder
    device: str = "auto"
    base_dir: str = "."  # relative paths resolve against this (the config file's folder)

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model_by_name(self, name: str) -> ModelInput:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def merge_inputs(self) -> list[ModelInput]:
        """The models that feed the merge method, in order (the base model excluded)."""
        return [m for m in self.models if m.name != self.base_model]

    def absolute(self) -> RunConfig:
        """A copy whose file paths no longer depend on where the config file was."""
        c = dataclasses.replace(self)
        c.models = [ModelInput(str(self.resolve_path(m.path).resolve()), m.name) for m in self.models]
        c.loras = [LoraInput(str(self.resolve_path(lo.path).resolve()), lo.apply_to, lo.strength)
                   for lo in self.loras]
        for attr in ("diffusers_config", "wildcards_dir", "models_dir", "output_dir"):
            if getattr(self, attr):
                setattr(c, attr, str(self.resolve_path(getattr(self, attr)).resolve()))
        if self.recipe.path:
            c.recipe = RecipeSettings(str(self.resolve_path(self.recipe.path).resolve()))
        c.scorers = [
            ScorerSettings(sc.name, sc.weight, {
                k: str(self.resolve_path(v).resolve()) if k in SCORER_PATH_OPTIONS and isinstance(v, str) and v
                else v for k, v in sc.options.items()})
            for sc in self.scorers
        ]
        return c

    def named_paths(self) -> list[tuple[str, Path]]:
        """Every (field, path) this config names, relative ones resolved as the run will."""
        out = [(f"models[{i}].path", self.resolve_path(m.path)) for i, m in enumerate(self.models)]
        out += [(f"loras[{i}].path", self.resolve_path(lo.path)) for i, lo in enumerate(self.loras)]
        for attr in ("diffusers_config", "wildcards_dir", "models_dir", "output_dir"):
            if getattr(self, attr):
                out.append((attr, self.resolve_path(getattr(self, attr))))
        if self.recipe.path:
            out.append(("recipe.path", self.resolve_path(self.recipe.path)))
        for i, sc in enumerate(self.scorers):
            for key, value in sc.options.items():
                if key in SCORER_PATH_OPTIONS and isinstance(value, str) and value:
                    out.append((f"scorers[{i}].options.{key}", self.resolve_path(value)))
        return out

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("base_dir")
        guide = data.pop("guide")
        data["guide"] = {
            **guide.pop("components"),
            "bounds": {k: _prune(v) for k, v in guide["bounds"].items()},
            "blocks": guide["blocks"],
            "recipe": {"include": guide["recipe_include"], "exclude": guide["recipe_exclude"]},
        }
        return data


def _prune(d: dict) -> dict:
    # by identity: 0 and 0.0 are real bounds and fixed values (0 == False)
    return {k: v for k, v in d.items() if v is not None and v is not False}
