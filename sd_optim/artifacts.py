"""The run folder: config.yaml, trials.jsonl, images with PNG text chunks, best.mecha.

A consumer of the runner's events, like the CLI and the tab.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from PIL import PngImagePlugin

from . import events as ev
from .config import RunConfig, save_config
from .paths import inside


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def trials_file(self) -> Path:
        return self.path / "trials.jsonl"

    @property
    def best_recipe(self) -> Path:
        return self.path / "best.mecha"

    def trial_recipe(self, number: int) -> Path:
        return self.path / "recipes" / f"trial-{number:05d}.mecha"

    def read_trials(self) -> list[dict[str, Any]]:
        if not self.trials_file.exists():
            return []
        return [json.loads(line) for line in self.trials_file.read_text(encoding="utf-8").splitlines()
                if line.strip()]


class ArtifactWriter:
    """Writes the run folder from the event stream."""

    def __init__(self, folder: RunFolder, config: RunConfig, save_images: bool = True):
        self.folder = folder
        self.config = config
        self.save_images = save_images
        self._images: dict[int, list[dict[str, Any]]] = {}

    def start(self) -> None:
        self.folder.path.mkdir(parents=True, exist_ok=True)
        save_config(self.config.absolute(), self.folder.path / "config.yaml")

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.ImageScored):
            self._image(event)
        elif isinstance(event, ev.ReferenceScored):
            self._append({"kind": "reference", "model": event.model, "value": event.value,
                          "per_payload": event.per_payload,
                          "images": self._images.pop(-1, []), "time": time.time()})
        elif isinstance(event, ev.TrialFinished):
            self._append({
                "kind": "trial", "number": event.number, "state": event.state,
                "value": event.value, "params": event.params, "per_payload": event.per_payload,
                "scores": event.per_scorer, "timings": event.timings, "reason": event.reason,
                "images": self._images.pop(event.number, []), "time": time.time(),
            })
        elif isinstance(event, ev.TrialMerged):
            pass
        elif isinstance(event, ev.NewBest):
            self.folder.best_recipe.write_text(event.recipe, encoding="utf-8")
            path = self.folder.trial_recipe(event.number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(event.recipe, encoding="utf-8")

    def _append(self, row: dict[str, Any]) -> None:
        with self.folder.trials_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def _image(self, e: ev.ImageScored) -> None:
        entry: dict[str, Any] = {"payload": e.payload, "index": e.index, "seed": e.seed,
                                 "scores": e.scores}
        if self.save_images:
            sub = f"reference/{e.params.get('model', 'input')}" if e.trial < 0 else f"{e.trial:05d}"
            path = self.folder.path / "images" / sub / f"{e.payload}-{e.index:02d}.png"
            inside(self.folder.path, path, "payloads.name")
            path.parent.mkdir(parents=True, exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", e.infotext or e.prompt)
            info.add_text("sd_optim", json.dumps({
                "trial": e.trial, "payload": e.payload, "index": e.index, "seed": e.seed,
                "prompt": e.prompt, "negative_prompt": e.negative_prompt, "scores": e.scores,
                "params": e.params,
            }, default=str))
            e.image.save(path, pnginfo=info)
            e.path = str(path)
            entry["path"] = str(path.relative_to(self.folder.path))
        self._images.setdefault(e.trial, []).append(entry)
