"""The demo: a real optimization on tiny generated SD1-topology checkpoints.

Two tiny checkpoints are generated; reference images are rendered from a *hidden* blend of
them; the optimizer searches the blend whose images look closest to the references (the
``reference`` scorer), so a run visibly converges towards the hidden values without any
downloaded weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .hosts.standalone import make_host
from .merging import MergeEngine
from .run.runner import Runner
from .search.planning import make_planner
from .tiny_models import TINY_SIZE, tiny_diffusers_config, tiny_model_set

HIDDEN = {"diffuser.all.alpha": 0.7, "clip_l.all.alpha": 0.25}


def demo_config(folder: Path, models: list[Path], config_dir: Path, trials: int,
                references: Path, study: str = "demo") -> dict[str, Any]:
    return {
        "models": [{"path": str(models[0]), "name": "tiny_a"}, {"path": str(models[1]), "name": "tiny_b"}],
        "diffusers_config": str(config_dir),
        "device": "cpu",
        "merge": {"method": "weighted_sum"},
        "guide": {"diffuser": ["single"], "clip_l": ["single"]},
        "payloads": [
            {"name": "cat", "prompt": "a photo of a cat", "seed": 1, "steps": 2, "cfg_scale": 5,
             "sampler": "Euler", "width": TINY_SIZE, "height": TINY_SIZE, "batch_size": 2},
            {"name": "house", "prompt": "a house by a lake", "negative_prompt": "blurry", "seed": 7,
             "steps": 2, "cfg_scale": 5, "sampler": "Euler", "width": TINY_SIZE, "height": TINY_SIZE},
        ],
        "scorers": [{"name": "reference", "options": {"folder": str(references)}}],
        "optimizer": {"sampler": "tpe", "trials": trials, "seed": 0,
                      "sampler_options": {"n_startup_trials": 4}, "study": study},
        "output_dir": str(folder / "runs"),
    }


def render_references(config, host, params: dict[str, float], folder: Path) -> None:
    """Render each prompt set's images from the blend ``params`` into ``folder/<set>/<i>.png``."""
    planner = make_planner(config, host.model_config())
    engine = MergeEngine(device=host.device)
    with host.open_slot() as slot:
        engine.apply(planner.recipe(params), slot, planner.model_config)
        for payload, job in Runner(config, host)._jobs():
            (folder / payload.name).mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(host.generate(job)):
                img.image.save(folder / payload.name / f"{i}.png")


def demo_data(folder: Path, trials: int, study: str) -> dict[str, Any]:
    """The tiny models in ``folder`` and the demo's config data (``study`` empty: the config names
    none, so the tab picks a fresh name). The references are rendered by :func:`ensure_references`."""
    models = tiny_model_set("sd1", folder / "models", n=2, seed=0)
    config_dir = tiny_diffusers_config("sd1", folder / "diffusers-config")
    data = demo_config(folder, models, config_dir, trials, references_folder(folder), study)
    if not study:
        data["optimizer"].pop("study")
    return data


def references_folder(folder: Path) -> Path:
    return folder / "references"


def ensure_references(config, folder: Path, host=None) -> None:
    """The references of the hidden blend in ``references_folder(folder)``, rendered unless there
    (with ``host``, or a standalone host built for it)."""
    references = references_folder(folder)
    if not (references / "house" / "0.png").exists():
        render_references(config, host or make_host(config), HIDDEN, references)


def demo_folder(folder: Path | None) -> tuple[Path, str]:
    """The demo's folder (a new temporary one when None) and a study name free in it."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="sd-optim-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder, _free_study_name(folder / "runs")


def _free_study_name(runs: Path) -> str:
    """``demo``, or ``demo-2``, ``demo-3``... when ``--out`` already holds earlier demo runs."""
    name, n = "demo", 1
    while (runs / name).exists():
        n += 1
        name = f"demo-{n}"
    return name
