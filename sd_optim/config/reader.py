"""Reads plain YAML data into the run config dataclasses, collecting every problem.

Each problem names its field path and the bad value (``payloads[2].steps: must be >= 1,
got 0``), so a bad file reports everything at once and nothing runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import NO_VALUE, ConfigError, Problem
from ..files.paths import name_problem
from .model import (
    BASELINES,
    CONFIRM_TOP_MAX,
    ITEM_KINDS,
    MEANS,
    MERGE_PRECISIONS,
    MODES,
    OBJECTIVE_NAME,
    ON_ERROR,
    ONE_MODEL_METHODS,
    PRUNERS,
    SAMPLER_PATH,
    SAMPLERS,
    STRATEGIES,
    AfterRun,
    Bounds,
    EarlyStopping,
    Guide,
    LoraInput,
    MergeSettings,
    ModelInput,
    OptimizerSettings,
    Payload,
    RecipeSettings,
    RunConfig,
    ScorerSettings,
    ScoringSettings,
    Strategy,
)
from .safe_yaml import load_config_mapping

MAX_SIDE = 4096  # payloads' width / height: larger is a typo, or runs out of memory at trial 0
MAX_BATCH = 64


class ConfigReader:
    """Reads plain YAML data into the dataclasses, collecting every problem with its path."""

    def __init__(self):
        self.problems: list[Problem] = []

    def bad(self, path: str, message: str, value: Any = NO_VALUE) -> None:
        self.problems.append(Problem(path, message, value))

    def lacks(self, path: str, message: str, value: Any = NO_VALUE) -> None:
        """A problem of a set-up still being filled in: something required is not there yet."""
        self.problems.append(Problem(path, message, value, incomplete=True))

    # --- primitive readers ---------------------------------------------------------------

    def mapping(self, path: str, value: Any, known: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, "must be a mapping", value)
            return {}
        for key in value:
            if key not in known:
                hint = _nearest(str(key), known)
                self.bad(f"{path}.{key}" if path else str(key), f"unknown field{hint}")
        return value

    def str_(self, path: str, value: Any, default: str = "", choices=None) -> str:
        if value is None or (value == "" and choices):
            return default
        if not isinstance(value, str):
            self.bad(path, "must be a string", value)
            return default
        if choices and value not in choices:
            self.bad(path, f"must be one of {', '.join(choices)}", value)
            return default
        return value

    def num(self, path: str, value: Any, default, *, integer=False, minimum=None, maximum=None,
            allow_none=False):
        if value is None:
            if not allow_none and default is None:
                self.lacks(path, "is required")
            return default
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            self.bad(path, "must be an integer" if integer else "must be a number", value)
            return default
        if not integer and not math.isfinite(value):
            self.bad(path, "must be finite", value)
            return default
        if minimum is not None and value < minimum:
            self.bad(path, f"must be >= {minimum}", value)
            return default
        if maximum is not None and value > maximum:
            self.bad(path, f"must be <= {maximum}", value)
            return default
        return value

    def bool_(self, path: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(path, "must be true or false", value)
            return default
        return value

    def str_list(self, path: str, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.bad(path, "must be a list of strings", value)
            return []
        return list(value)

    def list_(self, path: str, value: Any) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(path, "must be a list", value)
            return []
        return value

    def plain_dict(self, path: str, value: Any) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.bad(path, "must be a mapping with string keys", value)
            return {}
        return dict(value)

    # --- sections ------------------------------------------------------------------------

    def run_config(self, data: Any, base_dir: str) -> RunConfig:
        top = self.mapping("", data, tuple(f.name for f in dataclasses.fields(RunConfig)
                                           if f.name != "base_dir") + ("name",))
        if data is not None and not isinstance(data, dict):
            return RunConfig(models=[], payloads=[], scorers=[])
        mode = self.str_("mode", top.get("mode"), "merge", MODES)
        models = self.models(top.get("models"))
        method = top["merge"].get("method") if isinstance(top.get("merge"), dict) else None
        fewest = 1 if method in ONE_MODEL_METHODS else 2
        if mode == "merge" and len(models) < fewest:
            given = ", ".join(_model_label(m) for m in top.get("models") or []) or "none"
            self.lacks("models", f"merge mode needs at least {'one checkpoint' if fewest == 1 else 'two checkpoints'}"
                                 f"; given: {given}")
        names = [m.name for m in models]
        cfg = RunConfig(
            models=models,
            payloads=self.payloads(top.get("payloads")),
            scorers=self.scorers(top.get("scorers")),
            mode=mode,
            loras=self.loras(top.get("loras"), names),
            base_model=self.model_name("base_model", top.get("base_model"), names),
            host_model=self.model_name("host_model", top.get("host_model"), names),
            diffusers_config=self.str_("diffusers_config", top.get("diffusers_config")),
            merge=self.merge(top.get("merge"), mode),
            recipe=self.recipe(top.get("recipe"), mode),
            guide=self.guide(top.get("guide")),
            wildcards_dir=self.str_("wildcards_dir", top.get("wildcards_dir")),
            blocks_dir=self.str_("blocks_dir", top.get("blocks_dir")),
            scoring=self.scoring(top.get("scoring")),
            optimizer=self.optimizer(top.get("optimizer")),
            after_run=self.after_run(top.get("after_run")),
            output_dir=self.str_("output_dir", top.get("output_dir"), "runs"),
            models_dir=self.str_("models_dir", top.get("models_dir")),
            device=self.device(top.get("device")),
            merge_precision=self.str_("merge_precision", top.get("merge_precision"), "fp32", MERGE_PRECISIONS),
            base_dir=base_dir,
        )
        if top.get("name") is not None:
            cfg.optimizer.study = self.str_("name", top.get("name"))
        if not cfg.host_model and cfg.models:
            cfg.host_model = cfg.models[0].name
        for i, lora in enumerate(cfg.loras):
            if not lora.apply_to and cfg.models:
                lora.apply_to = cfg.models[0].name
        self.check_scorer_filters(cfg)
        self.check_objectives(cfg)
        self.check_coarse(cfg)
        if cfg.scorers and not any(sc.weight > 0 for sc in cfg.scorers):
            self.lacks("scorers", "at least one scorer needs a weight > 0", [sc.weight for sc in cfg.scorers])
        if cfg.payloads and not any(p.weight > 0 for p in cfg.payloads):
            self.lacks("payloads", "at least one prompt set needs a weight > 0", [p.weight for p in cfg.payloads])
        return cfg

    def models(self, value: Any) -> list[ModelInput]:
        out: list[ModelInput] = []
        items = self.list_("models", value)
        for i, item in enumerate(items):
            path = f"models[{i}]"
            if isinstance(item, str):
                item = {"path": item}
            d = self.mapping(path, item, ("path", "name"))
            p = self.str_(f"{path}.path", d.get("path"))
            if not p:
                self.lacks(f"{path}.path", "is required")
            name = self.str_(f"{path}.name", d.get("name")) or Path(p).stem
            if name and name_problem(name):  # it names the folder of the model's reference images
                self.bad(f"{path}.name", name_problem(name) + " (set name: to another)", name)
            if name in [m.name for m in out]:
                self.bad(f"{path}.name", "duplicates another model's name (set name: to tell them apart)", name)
            out.append(ModelInput(path=p, name=name))
        return out

    def model_name(self, path: str, value: Any, names: list[str]) -> str:
        name = self.str_(path, value)
        if name and name not in names:
            self.bad(path, f"must name one of the models ({', '.join(names)})", name)
            return ""
        return name

    def loras(self, value: Any, names: list[str]) -> list[LoraInput]:
        out = []
        for i, item in enumerate(self.list_("loras", value)):
            path = f"loras[{i}]"
            d = self.mapping(path, {"path": item} if isinstance(item, str) else item,
                             ("path", "apply_to", "strength"))
            p = self.str_(f"{path}.path", d.get("path"))
            if not p:
                self.lacks(f"{path}.path", "is required")
            out.append(LoraInput(
                path=p,
                apply_to=self.model_name(f"{path}.apply_to", d.get("apply_to"), names),
                strength=self.num(f"{path}.strength", d.get("strength"), 1.0),
            ))
        return out

    def merge(self, value: Any, mode: str) -> MergeSettings:
        d = self.mapping("merge", value, ("method", "fixed"))
        method = self.str_("merge.method", d.get("method"), "weighted_sum")
        fixed = self.plain_dict("merge.fixed", d.get("fixed"))
        for k, x in fixed.items():
            if isinstance(x, bool) or not isinstance(x, (int, float, str)) and x is not None:
                self.bad(f"merge.fixed.{k}", "must be a number, string or null", x)
        return MergeSettings(method=method, fixed=fixed)

    def recipe(self, value: Any, mode: str) -> RecipeSettings:
        d = self.mapping("recipe", value, ("path",))
        p = self.str_("recipe.path", d.get("path"))
        if mode == "recipe" and not p:
            self.lacks("recipe.path", "recipe mode needs a .mecha file")
        return RecipeSettings(path=p)

    def guide(self, value: Any) -> Guide:
        if value is None:
            return Guide()
        if not isinstance(value, dict):
            self.bad("guide", "must be a mapping", value)
            return Guide()
        g = Guide()
        for comp, strategies in value.items():
            if comp == "bounds":
                for name, b in self.plain_dict("guide.bounds", strategies).items():
                    g.bounds[name] = self.bounds(f"guide.bounds.{name}", b)
            elif comp == "blocks":
                g.blocks = self.str_("guide.blocks", strategies)
            elif comp == "recipe":
                d = self.mapping("guide.recipe", strategies, ("include", "exclude"))
                g.recipe_include = self.str_list("guide.recipe.include", d.get("include")) or ["*"]
                g.recipe_exclude = self.str_list("guide.recipe.exclude", d.get("exclude"))
            else:
                items = strategies if isinstance(strategies, list) else [strategies]
                g.components[str(comp)] = [
                    self.strategy(f"guide.{comp}[{i}]", s) for i, s in enumerate(items)
                ]
        return g

    def strategy(self, path: str, value: Any) -> Strategy:
        if isinstance(value, str):
            value = {"strategy": value}
        d = self.mapping(path, value, ("strategy", "items", "patterns", "groups", "params", "fixed"))
        kind = self.str_(f"{path}.strategy", d.get("strategy"), "", STRATEGIES)
        if not d.get("strategy"):
            self.lacks(f"{path}.strategy", f"is required (one of {', '.join(STRATEGIES)})")
        s = Strategy(
            strategy=kind,
            items=self.str_(f"{path}.items", d.get("items"), "", ITEM_KINDS),
            patterns=self.str_list(f"{path}.patterns", d.get("patterns")),
            params=self.str_list(f"{path}.params", d.get("params")),
            fixed={k: self.num(f"{path}.fixed.{k}", v, None)
                   for k, v in self.plain_dict(f"{path}.fixed", d.get("fixed")).items()},
        )
        groups = self.plain_dict(f"{path}.groups", d.get("groups"))
        for name, pats in groups.items():
            s.groups[name] = self.str_list(f"{path}.groups.{name}", pats)
            if not s.groups[name]:
                self.lacks(f"{path}.groups.{name}", "needs at least one pattern", pats)
        if kind == "select" and not s.patterns:
            self.lacks(f"{path}.patterns", "select needs at least one pattern")
        if kind == "group" and not s.groups:
            self.lacks(f"{path}.groups", "group needs at least one named group")
        if kind != "group" and s.groups:
            self.bad(f"{path}.groups", f"only the group strategy takes groups (this is {kind!r})")
        if kind != "none" and s.fixed:
            self.bad(f"{path}.fixed", "only the none strategy takes fixed values; use guide.bounds")
        return s

    def device(self, value: Any) -> str:
        device = self.str_("device", value, "auto")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            self.bad("device", "must be auto, cpu, cuda, cuda:N or mps", device)
            return "auto"
        return device

    def bounds(self, path: str, value: Any) -> Bounds:
        if not isinstance(value, dict):  # a bare value fixes the parameter
            return Bounds(fixed=self.num(path, value, None, allow_none=True))
        d = self.mapping(path, value, ("low", "high", "log", "step", "choices", "fixed"))
        choices = self.list_(f"{path}.choices", d.get("choices")) or None
        if isinstance(d.get("choices"), list) and not d["choices"]:
            self.lacks(f"{path}.choices", "needs at least one choice (or leave choices out)", [])
        for i, c in enumerate(choices or []):
            self.num(f"{path}.choices[{i}]", c, None)
        b = Bounds(
            low=self.num(f"{path}.low", d.get("low"), None, allow_none=True),
            high=self.num(f"{path}.high", d.get("high"), None, allow_none=True),
            log=self.bool_(f"{path}.log", d.get("log"), False),
            step=self.num(f"{path}.step", d.get("step"), None, allow_none=True),
            choices=choices,
            fixed=self.num(f"{path}.fixed", d.get("fixed"), None, allow_none=True),
        )
        if b.log and b.low is None:
            self.bad(f"{path}.low", "log: true needs an explicit low > 0")
        if b.low is not None and b.high is not None and b.low >= b.high:
            self.bad(f"{path}.high", f"must be greater than low ({b.low})", b.high)
        if b.log and b.low is not None and b.low <= 0:
            self.bad(f"{path}.low", "must be > 0 with log: true", b.low)
        if b.step is not None and b.step <= 0:
            self.bad(f"{path}.step", "must be > 0", b.step)
        if b.step is not None and b.log:
            self.bad(f"{path}.step", "cannot be combined with log: true", b.step)
        return b

    def payloads(self, value: Any) -> list[Payload]:
        items = self.list_("payloads", value)
        if not items:
            self.lacks("payloads", "at least one prompt set is required")
        out: list[Payload] = []
        known = tuple(f.name for f in dataclasses.fields(Payload))
        for i, item in enumerate(items):
            p = f"payloads[{i}]"
            d = self.mapping(p, item, known)
            prompt = self.str_(f"{p}.prompt", d.get("prompt"))
            if not prompt:
                self.lacks(f"{p}.prompt", "is required")
            name = self.str_(f"{p}.name", d.get("name")) or f"set{i}"
            if name_problem(name):  # it names the trial's image files
                self.bad(f"{p}.name", name_problem(name), name)
            if name in [x.name for x in out]:
                self.bad(f"{p}.name", "duplicates another prompt set's name", name)
            width = self.num(f"{p}.width", d.get("width"), 512, integer=True, minimum=8, maximum=MAX_SIDE)
            height = self.num(f"{p}.height", d.get("height"), 512, integer=True, minimum=8, maximum=MAX_SIDE)
            for dim, val in (("width", width), ("height", height)):
                if val % 8:
                    self.bad(f"{p}.{dim}", "must be a multiple of 8", val)
            out.append(Payload(
                name=name,
                prompt=prompt,
                negative_prompt=self.str_(f"{p}.negative_prompt", d.get("negative_prompt")),
                seed=self.num(f"{p}.seed", d.get("seed"), 0, integer=True, minimum=0),
                steps=self.num(f"{p}.steps", d.get("steps"), 20, integer=True, minimum=1, maximum=1000),
                cfg_scale=self.num(f"{p}.cfg_scale", d.get("cfg_scale"), 7.0, minimum=0),
                sampler=self.str_(f"{p}.sampler", d.get("sampler"), "Euler a"),
                scheduler=self.str_(f"{p}.scheduler", d.get("scheduler"), "Automatic"),
                width=width,
                height=height,
                batch_size=self.num(f"{p}.batch_size", d.get("batch_size"), 1, integer=True, minimum=1,
                                    maximum=MAX_BATCH),
                weight=self.num(f"{p}.weight", d.get("weight"), 1.0, minimum=0),
                scorers=self.str_list(f"{p}.scorers", d.get("scorers")),
            ))
        return out

    def scorers(self, value: Any) -> list[ScorerSettings]:
        items = self.list_("scorers", value)
        if not items:
            self.lacks("scorers", "at least one scorer is required")
        out = []
        for i, item in enumerate(items):
            p = f"scorers[{i}]"
            d = self.mapping(p, {"name": item} if isinstance(item, str) else item,
                             ("name", "weight", "options"))
            name = self.str_(f"{p}.name", d.get("name"))
            if not name:
                self.lacks(f"{p}.name", "is required")
            if name and name in [s.name for s in out]:
                self.bad(f"{p}.name", "is listed twice; each scorer may appear once", name)
            out.append(ScorerSettings(
                name=name,
                weight=self.num(f"{p}.weight", d.get("weight"), 1.0, minimum=0),
                options=self.plain_dict(f"{p}.options", d.get("options")),
            ))
        return out

    def check_scorer_filters(self, cfg: RunConfig) -> None:
        names = [s.name for s in cfg.scorers]
        for i, p in enumerate(cfg.payloads):
            for j, s in enumerate(p.scorers):
                if s not in names:
                    self.bad(f"payloads[{i}].scorers[{j}]",
                             f"must name a configured scorer ({', '.join(names)})", s)

    def scoring(self, value: Any) -> ScoringSettings:
        d = self.mapping("scoring", value, ("scorer_mean", "payload_mean", "normalize", "vram_gb", "objectives"))
        return ScoringSettings(
            scorer_mean=self.str_("scoring.scorer_mean", d.get("scorer_mean"), "arithmetic", MEANS),
            payload_mean=self.str_("scoring.payload_mean", d.get("payload_mean"), "arithmetic", MEANS),
            normalize=self.bool_("scoring.normalize", d.get("normalize"), True),
            vram_gb=self.num("scoring.vram_gb", d.get("vram_gb"), 0.0, minimum=0.0),
            objectives=self.objectives(d.get("objectives")),
        )

    def objectives(self, value: Any) -> dict[str, list[str]]:
        """``scoring.objectives``: name -> the scorers whose combined score it is (a name or a list)."""
        d = self.plain_dict("scoring.objectives", value)
        out = {}
        for name, scorers in d.items():
            path = f"scoring.objectives.{name}"
            if not re.fullmatch(OBJECTIVE_NAME, name):
                self.bad("scoring.objectives", "an objective's name is letters, digits, '_', '.' and '-' "
                                               "(up to 40, starting with a letter or digit)", name)
                continue
            before = len(self.problems)
            names = self.str_list(path, scorers)
            if len(self.problems) > before:
                continue  # str_list said why
            if not names:
                self.lacks(path, "names no scorer; give the scorers whose score this objective is", scorers)
            out[name] = names
        if len(d) == 1:
            self.bad("scoring.objectives", "needs two or more objectives (with one, leave it out: every scorer "
                                           "makes the value)", list(d))
        return out

    def check_coarse(self, cfg: RunConfig) -> None:
        """``optimizer.coarse_trials`` against the run it is the first part of."""
        opt = cfg.optimizer
        if not opt.coarse_trials:
            return
        if opt.coarse_trials >= opt.trials:
            self.bad("optimizer.coarse_trials", f"must be fewer than optimizer.trials ({opt.trials}): they are the "
                                                "first of the run's trials, the rest tune the guide's space",
                     opt.coarse_trials)
        if cfg.mode != "merge":
            self.bad("optimizer.coarse_trials", "works in merge mode (a recipe's sites have no coarser space); "
                                                "set it to 0", opt.coarse_trials)
        if opt.start_from_study:
            self.bad("optimizer.start_from_study", "the coarse trials' best is where the run starts "
                                                   "(optimizer.coarse_trials); leave it empty", opt.start_from_study)

    def check_objectives(self, cfg: RunConfig) -> None:
        """Objectives against the scorers, the prompt sets and what Optuna cannot do with several."""
        objectives = cfg.scoring.objectives
        if len(objectives) < 2:
            return
        weights = {s.name: s.weight for s in cfg.scorers}
        for name, members in objectives.items():
            path = f"scoring.objectives.{name}"
            for i, scorer in enumerate(members):
                if scorer not in weights:
                    near = _nearest(scorer, list(weights))
                    self.bad(f"{path}[{i}]", f"must name a configured scorer ({', '.join(weights)}){near}", scorer)
            known = [s for s in members if s in weights]
            if known and not any(weights[s] > 0 for s in known):
                self.bad(path, "needs a scorer with a weight > 0", known)
            if known and cfg.payloads and not any(not p.scorers or set(p.scorers) & set(known) for p in cfg.payloads):
                self.bad(path, "no prompt set is scored by its scorers (see the prompt sets' scorer filters)", known)
        unused = [s.name for s in cfg.scorers if not any(s.name in m for m in objectives.values())]
        if unused:
            self.bad("scoring.objectives", "every scorer belongs to an objective; these belong to none", unused)
        opt = cfg.optimizer
        if opt.pruner != "none":
            self.bad("optimizer.pruner", "cannot prune a run with several objectives (Optuna's pruners take "
                                         "one value); set it to none", opt.pruner)
        if opt.confirm_top:
            self.bad("optimizer.confirm_top", "a run with several objectives has no single best to confirm; "
                                              "set it to 0", opt.confirm_top)
        if opt.sampler == "cmaes":
            self.bad("optimizer.sampler", "CMA-ES optimizes one objective; with several use tpe (the default), "
                                          "gp, qmc, random, grid or e.g. optuna.samplers.NSGAIISampler", opt.sampler)

    def optimizer(self, value: Any) -> OptimizerSettings:
        known = tuple(f.name for f in dataclasses.fields(OptimizerSettings))
        d = self.mapping("optimizer", value, known)
        es = self.mapping("optimizer.early_stopping", d.get("early_stopping"),
                          ("patience", "min_improvement"))
        baseline = self.str_list("optimizer.baseline", d.get("baseline"))
        for i, b in enumerate(baseline):
            if b not in BASELINES:
                self.bad(f"optimizer.baseline[{i}]", f"must be one of {', '.join(BASELINES)}", b)
        return OptimizerSettings(
            sampler=self.sampler(d.get("sampler")),
            sampler_options=self.plain_dict("optimizer.sampler_options", d.get("sampler_options")),
            trials=self.num("optimizer.trials", d.get("trials"), 20, integer=True, minimum=1),
            pruner=self.str_("optimizer.pruner", d.get("pruner"), "none", PRUNERS),
            pruner_options=self.plain_dict("optimizer.pruner_options", d.get("pruner_options")),
            confirm_top=self.num("optimizer.confirm_top", d.get("confirm_top"), 0, integer=True, minimum=0,
                                 maximum=CONFIRM_TOP_MAX),
            seed=self.num("optimizer.seed", d.get("seed"), None, integer=True, minimum=0, allow_none=True),
            max_suggest_s=self.num("optimizer.max_suggest_s", d.get("max_suggest_s"), 1.0, minimum=0.0),
            storage=self.str_("optimizer.storage", d.get("storage")),
            study=self.str_("optimizer.study", d.get("study")),
            early_stopping=EarlyStopping(
                patience=self.num("optimizer.early_stopping.patience", es.get("patience"), 0,
                                  integer=True, minimum=0),
                min_improvement=self.num("optimizer.early_stopping.min_improvement",
                                         es.get("min_improvement"), 0.0, minimum=0),
            ),
            baseline=[b for b in baseline if b in BASELINES],
            start_from=self.start_from(d.get("start_from")),
            start_from_study=self.str_("optimizer.start_from_study", d.get("start_from_study")),
            coarse_trials=self.num("optimizer.coarse_trials", d.get("coarse_trials"), 0, integer=True, minimum=0),
            score_inputs=self.bool_("optimizer.score_inputs", d.get("score_inputs"), False),
            on_trial_error=self.str_("optimizer.on_trial_error", d.get("on_trial_error"),
                                     "continue", ON_ERROR),
            retries=self.num("optimizer.retries", d.get("retries"), 1, integer=True, minimum=0),
            heartbeat_s=self.num("optimizer.heartbeat_s", d.get("heartbeat_s"), 20, integer=True, minimum=1),
        )


    def start_from(self, value: Any) -> list[dict[str, Any]]:
        """Parameter sets: a list of mappings (names and values are checked against the search
        space when the run starts)."""
        points = []
        for i, point in enumerate(self.list_("optimizer.start_from", value)):
            if isinstance(point, dict) and all(isinstance(k, str) for k in point):
                points.append(dict(point))
            else:
                self.bad(f"optimizer.start_from[{i}]", "must be a mapping of parameter names to values", point)
        return points

    def sampler(self, value: Any) -> str:
        """A built-in sampler's name, or a sampler class by import path (imported when the run
        starts: :func:`sd_optim.run.study.make_sampler`)."""
        if isinstance(value, str) and value not in SAMPLERS and re.fullmatch(SAMPLER_PATH, value.strip()):
            return value.strip()
        if isinstance(value, str) and value and value not in SAMPLERS:
            self.bad("optimizer.sampler", f"must be one of {', '.join(SAMPLERS)}, or a sampler class by import "
                                          "path (package.module.Class)", value)
            return "tpe"
        return self.str_("optimizer.sampler", value, "tpe", SAMPLERS)

    def after_run(self, value: Any) -> AfterRun:
        d = self.mapping("after_run", value, tuple(f.name for f in dataclasses.fields(AfterRun)))
        name = self.str_("after_run.save_name", d.get("save_name"))
        if name and name_problem(name):
            self.bad("after_run.save_name", name_problem(name), name)
        return AfterRun(keep_best=self.bool_("after_run.keep_best", d.get("keep_best"), False),
                        save_best=self.bool_("after_run.save_best", d.get("save_best"), False),
                        save_name=name)


def _model_label(item: Any) -> str:
    """A ``models`` entry as a user knows it: its name, or its file's name."""
    if isinstance(item, dict):
        return str(item.get("name") or Path(str(item.get("path", ""))).name)
    return Path(str(item)).name


def _nearest(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("config file", "no such file", str(path))]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem("config file", f"not UTF-8 text (a YAML file is expected; byte {e.start} "
                                                  f"is {e.object[e.start:e.start + 1]!r})", str(path))]) from None
    except OSError as e:
        raise ConfigError([Problem("config file", f"cannot read it: {e.strerror or e}", str(path))]) from None
    return config_from_dict(load_config_mapping(text, f"config file {path}"), base_dir=path.parent)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def config_from_dict(data: Any, *, base_dir: str | Path = ".") -> RunConfig:
    reader = ConfigReader()
    config = reader.run_config(data, str(base_dir))
    if reader.problems:
        raise ConfigError(reader.problems)
    return config
