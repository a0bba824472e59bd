"""What the set-up panels offer and check: checkpoints with their architecture, merge methods and
their hyperparameters, a recipe's tunable sites, the scorers and whether their files are there,
the existing studies, and the live preview of the parameters a set-up would tune.

No gradio here; the tab turns these values into components.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, ScorerSettings, config_from_dict
from ..config.reader import ConfigReader
from ..errors import ConfigError, Problem, SpaceError
from ..files.inputs import check_files, check_inputs, infer_model_config
from ..hosts.base import CheckpointRef
from ..run.study import existing_studies, storage_url
from ..scoring import ScorerError, build_scorers
from ..scoring.inventory import inventory
from ..search.methods import method_signature, resolve_method
from ..search.recipe_mode import RecipePlanner, find_sites
from ..search.recipes import _is_delta
from ..search.space import build_search_space
from .runs import config_data


@dataclass(frozen=True)
class Checkpoint:
    title: str  # what the dropdown shows (the WebUI's title, or the path below the models folder)
    path: str


class ModelCatalog:
    """The checkpoints a user can pick: the WebUI's list, or the ``.safetensors`` files under a
    folder (standalone)."""

    def __init__(self, list_fn: Callable[[], list[CheckpointRef]] | None = None,
                 refresh_fn: Callable[[], None] | None = None, folder: str | Path | None = None):
        self._list_fn = list_fn
        self._refresh_fn = refresh_fn
        self.folder = Path(folder).expanduser() if folder else None
        self._items: list[Checkpoint] = []
        self._arch: dict[tuple[str, int, int], str] = {}
        self.refresh(rescan=False)

    def refresh(self, rescan: bool = True) -> list[str]:
        if rescan and self._refresh_fn is not None:
            self._refresh_fn()
        items: list[Checkpoint] = []
        if self._list_fn is not None:
            items += [Checkpoint(c.title, c.path) for c in self._list_fn()]
        if self.folder is not None and self.folder.is_dir():
            for path in sorted(self.folder.rglob("*.safetensors")):
                items.append(Checkpoint(path.relative_to(self.folder).as_posix(), str(path)))
        self._items = items
        return self.titles()

    def titles(self) -> list[str]:
        return [c.title for c in self._items]

    def path_for(self, choice: str) -> str:
        """The file behind a dropdown choice (a choice that is no title is taken as a path)."""
        for c in self._items:
            if c.title == choice:
                return c.path
        return choice

    def title_for(self, path: str) -> str:
        resolved = os.path.realpath(path)
        for c in self._items:
            if c.path == path or os.path.realpath(c.path) == resolved:
                return c.title
        return path

    def architecture(self, path: str) -> str:
        """The sd-mecha model config of a file (by its key names), remembered per file version."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return "missing file"
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in self._arch:
            if p.suffix != ".safetensors":
                self._arch[key] = "not a .safetensors file"
            else:
                try:
                    self._arch[key] = infer_model_config(p) or "unknown architecture"
                except (OSError, ValueError) as e:
                    self._arch[key] = f"unreadable ({e})"
        return self._arch[key]


# --- methods and recipes ----------------------------------------------------------------------

def method_rows(method: str) -> tuple[list[list[Any]], str]:
    """(rows of [hyperparameter, type, default] for ``method``, its model inputs as text)."""
    try:
        models, hypers = method_signature(resolve_method(method))
    except ConfigError as e:
        return [], e.problems[0]
    inputs = ", ".join(f"{m.name}{'...' if m.variadic else ''}"
                       f"{' (difference from the base model)' if m.merge_spaces == ('delta',) else ''}"
                       for m in models)
    rows = [[h.name, h.kind, "" if h.default is None else h.default] for h in hypers.values()]
    return rows, f"models: {inputs or 'none'}"


def method_needs_base(method: str) -> bool:
    """Whether the method takes a difference from a base model (or returns one)."""
    try:
        m = resolve_method(method)
    except ConfigError:
        return False
    models, _ = method_signature(m)
    return any(mp.merge_spaces == ("delta",) for mp in models) or _is_delta(
        m.get_return_type().data.merge_space)


def recipe_sites(path: str) -> list[tuple[str, Any]]:
    """A ``.mecha`` file's tunable sites as (name, value in the recipe)."""
    import sd_mecha

    text = Path(path).expanduser().read_text(encoding="utf-8")
    try:
        recipe = sd_mecha.deserialize(text.rstrip("\n").split("\n"))
    except Exception as e:  # noqa: BLE001 - sd-mecha raises several types for a bad file
        raise ValueError(f"not a valid .mecha recipe: {e}") from None
    return [(s.name, s.value) for s in find_sites(recipe)]


# --- scorers ----------------------------------------------------------------------------------

def scorer_rows(models_dir: str) -> list[list[Any]]:
    """One row of the scorer table per scorer offered here: [name, weight, options]. Not offered:
    a scorer this environment cannot run, and one offered only once installed (``hpsv3``) while
    its files are missing; the scorer guide lists both, with the reason or a Download."""
    return [[entry["name"], 1.0, ""] for entry in inventory(models_dir or None) if entry["offered"]]


def scorer_problems(spec: dict[str, Any], models_dir: str, base_dir: str = ".") -> list[str]:
    """What one configured scorer still lacks (missing files and where to put them), or nothing."""
    try:
        settings = ScorerSettings(spec.get("name", ""), 1.0, dict(spec.get("options") or {}))
        cfg = RunConfig(models=[], payloads=[], scorers=[settings], base_dir=base_dir)
        (scorer,) = build_scorers(cfg.absolute().scorers, device="cpu",
                                  models_dir=cfg.resolve_path(models_dir) if models_dir else None)
        return scorer.check_ready()
    except (ScorerError, TypeError, ValueError) as e:
        return [str(e)]


def scorer_status(scorers: list[dict[str, Any]], models_dir: str, base_dir: str = ".") -> list[str]:
    """For each configured scorer: ready, or what is missing and where to put it."""
    out = []
    for spec in scorers:
        problems = scorer_problems(spec, models_dir, base_dir)
        name = spec.get("name", "")
        out.append(f"{name}: ready" if not problems else f"{name}: " + "; ".join(problems))
    return out


def scorer_guide(models_dir: str) -> tuple[str, list[str]]:
    """(a Markdown line per registered scorer: what it measures and whether its files are there,
    the scorers whose missing files can be downloaded)."""
    lines, fetchable = [], []
    for entry in inventory(models_dir or None):
        missing = [f for f in entry["files"] if not f["found"]]
        if entry["unavailable"]:
            state = f"unavailable here: {entry['unavailable']}"
        elif not missing:
            state = "ready" if entry["files"] else "no files needed"
        else:
            sizes = ", ".join(f["approx_size"] for f in missing if f["approx_size"])
            plural = "s" if len(missing) > 1 else ""
            state = f"**missing {len(missing)} file{plural}**" + (f" ({sizes})" if sizes else "")
            if all(f["downloadable"] for f in missing):
                fetchable.append(entry["name"])
        lines.append(f"- `{entry['name']}` — {entry['summary']} · {state}")
    return "\n".join(lines), fetchable


# --- studies ----------------------------------------------------------------------------------

def study_choices(output_dir: str, storage: str = "") -> list[str]:
    """``name (N trials, best V)`` for every study in the storage, or in the run folders."""
    storages = [storage] if storage else []
    root = Path(output_dir).expanduser() if output_dir else None
    if not storage and root is not None and root.is_dir():
        storages = [storage_url("", d) for d in sorted(root.iterdir()) if (d / "study.db").exists()]
    out = []
    for url in storages:
        for s in existing_studies(url):
            best = s.best_trial.value if s.best_trial is not None else None
            label = f"{s.study_name} ({s.n_trials} trials"
            if len(s.directions) > 1:  # Optuna's summary has no single best: a Pareto front
                label += f", {len(s.directions)} objectives"
            out.append(label + (f", best {best:.4f})" if best is not None else ")"))
    return out


def study_of_choice(choice: str) -> str:
    return (choice or "").split(" (", 1)[0].strip()


def watched_study(output_dir: str, storage: str, choice: str):
    """The study picked in the dropdown, loaded to look at (a study another WebUI or worker runs,
    or any earlier one): in ``storage``, else in its run folder's study.db."""
    import optuna

    name = study_of_choice(choice)
    if not name:
        raise ConfigError([Problem("source_study", "pick a study to watch (↻ lists them)")])
    url = storage or storage_url("", Path(output_dir).expanduser() / name)
    if name not in [s.study_name for s in existing_studies(url)]:
        raise ConfigError([Problem("source_study", f"no study named {name!r} in {url}", name)])
    return optuna.load_study(study_name=name, storage=url)


# --- the parameter preview --------------------------------------------------------------------

_PLACEHOLDERS = {"payloads": [{"prompt": "preview"}], "scorers": ["image_stats"]}


_SHAPES_THE_SPACE = ("mode", "merge", "recipe", "guide", "models", "base_model", "blocks_dir")  # config sections


def _top_field(problem: Problem) -> str:
    """The config section a problem is about: ``guide`` for ``guide.diffuser[0].patterns``."""
    return problem.field.split(".")[0].split("[")[0]


def preview(data: dict[str, Any], model_config: str | None) -> tuple[list[str], list[Problem]]:
    """(the parameters a set-up would tune, problems) for a model of ``model_config``.

    Prompt sets and scorers do not change the parameters, so empty ones are filled in here."""
    if not model_config:
        return [], [Problem("models", "pick the checkpoints first (their architecture decides the parameters)",
                            incomplete=True)]
    data = {**data, **{k: v for k, v in _PLACEHOLDERS.items() if not data.get(k)}}
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        return [], [p for p in e.problems if _top_field(p) in _SHAPES_THE_SPACE]
    try:
        if cfg.mode == "recipe":
            if not cfg.recipe.path:
                return [], [Problem("recipe.path", "pick or upload a .mecha recipe", incomplete=True)]
            space = RecipePlanner(cfg, model_config).space
        else:
            space = build_search_space(cfg, model_config)
    except (ConfigError, SpaceError) as e:
        return [], list(e.problems)
    except (OSError, ValueError) as e:
        return [], [Problem("recipe.path", str(e), cfg.recipe.path)]
    lines = space.describe()
    lines += [f"note: {n}" for n in getattr(space, "notes", [])]
    return lines, []


def check_setup(data: dict[str, Any], defaults, model_config: str | None,
                sampler_problems: Callable[[str, str], dict[str, str]] | None = None) -> list[str]:
    """Every problem Start would meet before loading anything: the config's validation, missing
    files and files of another architecture, the parameter preview's problems, sampler and
    scheduler names the host does not have, and scorers that miss their weights."""
    try:
        raw, base_dir = config_data(data, defaults)
    except ConfigError as e:
        return list(e.problems)
    reader = ConfigReader()
    cfg = reader.run_config(raw, str(base_dir))
    problems = list(reader.problems)
    try:
        check_inputs(cfg, model_config) if model_config else check_files(cfg)
    except ConfigError as e:
        problems += e.problems
    problems += [p for p in preview(data, model_config)[1] if p not in problems]
    for i, p in enumerate(cfg.payloads if sampler_problems is not None else []):
        for name, message in sampler_problems(p.sampler, p.scheduler).items():
            problems.append(Problem(f"payloads[{i}].{name}", message))
    for i, s in enumerate(cfg.scorers):
        spec = {"name": s.name, "options": s.options}
        problems += [Problem(f"scorers[{i}]", p) for p in scorer_problems(spec, cfg.models_dir, cfg.base_dir)]
    return problems
