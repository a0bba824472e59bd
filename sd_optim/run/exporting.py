"""Export any trial of a study as a ``.mecha`` recipe or a ``.safetensors`` checkpoint."""

from __future__ import annotations

from pathlib import Path

import optuna

from ..config import config_from_dict, load_config
from ..errors import ConfigError, Problem
from ..search.planning import make_planner
from ..search.recipes import recipe_text
from .artifacts import new_file
from .shared import CONFIG_ATTR
from .study import (
    FINGERPRINT_ATTR,
    check_study_name,
    chosen_trial,
    existing_studies,
    read_studies,
    storage_url,
)


def load_run(output_dir: Path, study: str, storage: str = ""):
    check_study_name("study", study)
    folder = Path(output_dir) / study
    if storage:
        names = [s.study_name for s in read_studies(storage, "--storage")]
    else:
        storage = storage_url("", folder)
        # opening a missing study.db would create an empty one
        names = [s.study_name for s in existing_studies(storage)] if (folder / "study.db").is_file() else []
    if study not in names:
        raise ConfigError([Problem("study", f"no study named {study!r} in {storage} "
                                            f"(studies: {', '.join(names) or 'none'})")])
    s = optuna.load_study(study_name=study, storage=storage)
    return s, _run_config(s, folder)


def _run_config(study: optuna.Study, folder: Path):
    """The study's config: its run folder's, a worker's folder's (a shared study), or the one a
    shared study keeps in its database (``shared.CONFIG_ATTR``: export from any machine)."""
    config_path = folder / "config.yaml"
    for path in (config_path, *sorted(folder.glob("*/config.yaml"))):
        if path.is_file():
            return load_config(path)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if isinstance(stored, dict):
        return config_from_dict(stored)
    raise ConfigError([Problem("study", f"its run folder has no config.yaml ({config_path})", study.study_name)])


def trial_recipe(study: optuna.Study, config, trial: int | None):
    model_config = study.user_attrs.get(FINGERPRINT_ATTR, {}).get("model_config", "sd1-ldm")
    planner = make_planner(config, model_config)
    done = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if trial is None:
        if not done:
            raise ConfigError([Problem("study", f"no completed trial to export ({len(study.trials)} trials, "
                                                "none completed)", study.study_name)])
        t = chosen_trial(study)  # the confirmation stage's winner when it had one
    else:
        matches = [t for t in study.trials if t.number == trial]
        if not matches or matches[0].state != optuna.trial.TrialState.COMPLETE:
            raise ConfigError([Problem("--trial", f"no such completed trial (completed: {done})", trial)])
        t = matches[0]
    return planner.recipe(t.params)


def export_trial(output_dir: Path, study: str, *, trial: int | None, out: Path, storage: str = "") -> Path:
    import sd_mecha
    import torch

    from ..merging import MERGE_DTYPES

    if out.is_symlink():  # dangling or not: writing would create or replace its target elsewhere
        raise ConfigError([Problem("--out", "is a symbolic link; give the real path", str(out))])
    if out.exists():
        raise FileExistsError(f"--out: {out} exists; choose another name (never overwritten)")
    if out.suffix not in (".mecha", ".safetensors"):
        raise ConfigError([Problem("--out", "must end in .mecha or .safetensors", str(out))])
    s, config = load_run(output_dir, study, storage)
    recipe = trial_recipe(s, config, trial)
    out.parent.mkdir(parents=True, exist_ok=True)
    with new_file(out) as tmp:
        if out.suffix == ".mecha":
            tmp.write_text(recipe_text(recipe), encoding="utf-8")
        else:
            sd_mecha.merge(recipe, output=tmp, output_dtype=torch.float16,
                           merge_dtype=MERGE_DTYPES[config.merge_precision],
                           check_finite_output=False, omit_non_finite_inputs=False)
    return out
