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
SAMPLERS = ("tpe", "cmaes", "gp", "qmc", "random", "grid")  # or a class by import path (SAMPLER_PATH)
SAMPLER_PATH = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*"  # package.module.Class or package.module:Class
PRUNERS = ("none", "median", "percentile", "halving")  # stop a trial between its prompt sets
CONFIRM_TOP_MAX = 20  # optimizer.confirm_top: each one costs a trial's images again
MEANS = ("arithmetic", "geometric", "quadratic")
BASELINES = ("defaults", "midpoint")
ON_ERROR = ("continue", "stop")
MERGE_PRECISIONS = ("fp32", "fp16", "bf16")  # the dtype merges compute in (sd-mecha's merge_dtype)
SCORER_PATH_OPTIONS = ("folder", "head", "clip")  # scorer options that name files: relative to the config
ONE_MODEL_METHODS = ("layer_adjust",)  # merge mode: methods of one model (sd_optim/search/adjust.py)
OBJECTIVE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}"  # scoring.objectives: a name shown in tables and plots


def _shown(label: str, help: str = "", **default: Any) -> Any:
    """A field with the label a control shows for it and its one-line help (what an empty value
    means, a hint); ``default`` / ``default_factory`` as for :func:`dataclasses.field`."""
    return field(metadata={"label": label, "help": help}, **default)


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
    method: str = _shown("Merge method", default="weighted_sum")
    fixed: dict[str, Any] = _shown("Fixed values", "not tuned", default_factory=dict)


@dataclass
class RecipeSettings:
    path: str = _shown("Recipe", ".mecha: pick one or type a path", default="")


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
    blocks: str = _shown("Block config", "empty: the model's supermerger blocks", default="")  # an id
    recipe_include: list[str] = _shown("Include patterns", default_factory=lambda: ["*"])
    recipe_exclude: list[str] = _shown("Exclude patterns", default_factory=list)


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
    scorer_mean: str = _shown("Average over scorers", default="arithmetic")
    payload_mean: str = _shown("Average over prompt sets", default="arithmetic")
    normalize: bool = _shown("Scores on one scale", "each scorer's score mapped to 0–1 before averaging",
                             default=True)
    vram_gb: float = _shown("Scorer GPU memory between trials (GB)",
                            "above it the scorers' models wait on the CPU between trials; 0: no bound", default=0.0)
    # two or more: optimized together (a Pareto front); each a name and the scorers that make it
    objectives: dict[str, list[str]] = _shown("Objectives", "two or more, one `name: scorer, scorer` per line; "
                                              "empty: one value from every scorer", default_factory=dict)


@dataclass
class EarlyStopping:
    patience: int = _shown("Early stop after N trials without gain", "0: off", default=0)
    min_improvement: float = _shown("Minimum gain", default=0.0)


@dataclass
class OptimizerSettings:
    sampler: str = _shown("Optuna sampler", "or a class by import path: package.module.Class", default="tpe")
    sampler_options: dict[str, Any] = _shown("Sampler options", "`n_startup_trials: 4`", default_factory=dict)
    trials: int = _shown("Trials", default=20)
    pruner: str = _shown("Pruner", "stops a clearly worse trial between its prompt sets; none: off", default="none")
    pruner_options: dict[str, Any] = _shown("Pruner options", "`n_startup_trials: 5`", default_factory=dict)
    # at the end, the best N trials rendered again on fresh seeds; the winner picked on both
    confirm_top: int = _shown("Confirm the best N on fresh seeds", "0: off", default=0)
    seed: int | None = _shown("Seed", "empty: random", default=None)
    # a sampler this slow to suggest (3 trials in a row) hands the rest of the run to TPE
    max_suggest_s: float = _shown("Hand over to TPE after suggestions of (s)", "3 in a row; 0: never", default=1.0)
    storage: str = _shown("Storage URL", "empty: SQLite in the run folder", default="")  # an Optuna URL
    study: str = _shown("Study name", "empty: method + models", default="")
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    baseline: list[str] = _shown("Baseline trials first", default_factory=list)
    # warm start: parameter sets (name -> value; the rest drawn) tried first, in a new study
    start_from: list[dict[str, Any]] = _shown("Start from these values", "one `name: value, …` per line; "
                                              "unnamed parameters drawn", default_factory=list)
    # coarse to fine in one run: the first N of the trials tune one value per component (a study of
    # their own, "<study>-coarse"); the rest, the guide's space, start from the best of them
    coarse_trials: int = _shown("Coarse trials first", "one value per component, then the guide's space "
                                "from their best; 0: off", default=0)
    # warm start: that study's result, mapped onto this search space by the keys its parameters cover
    start_from_study: str = _shown("Start from the result of study", "e.g. a coarse study: every block at its value",
                                   default="")
    score_inputs: bool = _shown("Score the input models", default=False)
    on_trial_error: str = _shown("When a trial fails", default="continue")
    # a shared study (workers): how many times a dead worker's trial is run again by another
    retries: int = _shown("Retries of a dead worker's trial", default=1)
    # a shared study: each running trial's heartbeat; one silent for 3 beats is a dead worker's
    heartbeat_s: int = _shown("Heartbeat (seconds)", default=20)


@dataclass
class AfterRun:
    """What happens to the WebUI's model when a run ends (the original is restored by default)."""

    # leave the best trial's merge loaded instead of restoring
    keep_best: bool = _shown("Keep the best merge loaded", default=False)
    # write the best trial as a checkpoint into the WebUI's checkpoint folder
    save_best: bool = _shown("Save the best as a checkpoint", default=False)
    save_name: str = _shown("Checkpoint name", "empty: <study>-trial<N>", default="")  # a file name stem


@dataclass
class RunConfig:
    models: list[ModelInput]
    payloads: list[Payload]
    scorers: list[ScorerSettings]
    mode: str = _shown("Mode", default="merge")
    loras: list[LoraInput] = _shown("LoRAs merged into a model before the merge", "apply to: a model's name",
                                    default_factory=list)
    base_model: str = _shown("Base model", "methods that add differences", default="")
    host_model: str = _shown("Model to load", "default: the first", default="")
    diffusers_config: str = _shown("Diffusers config folder", "standalone; empty: the built-in SD1/SDXL configs",
                                   default="")
    merge: MergeSettings = field(default_factory=MergeSettings)
    recipe: RecipeSettings = field(default_factory=RecipeSettings)
    guide: Guide = field(default_factory=Guide)
    wildcards_dir: str = _shown("Wildcards folder", "__name__ in prompts; empty: none", default="")
    # YAML block definitions (sd_optim/search/block_defs.py), beside the shipped ones
    blocks_dir: str = _shown("Block definitions folder", "YAML files of your own blocks; the shipped ones are "
                             "always there", default="")
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    after_run: AfterRun = field(default_factory=AfterRun)
    output_dir: str = _shown("Run folder", default="runs")
    models_dir: str = _shown("Scorer models folder", default="")  # scorer weights
    device: str = _shown("Device", "empty: auto", default="auto")
    merge_precision: str = _shown("Merge precision", "fp32 as sd-mecha; fp16 / bf16 faster, a little less exact",
                                  default="fp32")
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
        for attr in ("diffusers_config", "wildcards_dir", "blocks_dir", "models_dir", "output_dir"):
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
        for attr in ("diffusers_config", "wildcards_dir", "blocks_dir", "models_dir", "output_dir"):
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


def field_text(cls: type, name: str) -> tuple[str, str]:
    """(label, one-line help) of a config field, as a control shows it."""
    meta = next(f for f in dataclasses.fields(cls) if f.name == name).metadata
    return meta.get("label", name), meta.get("help", "")
