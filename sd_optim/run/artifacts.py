"""The run folder: config.yaml, trials.jsonl, images with PNG text chunks, best.mecha.

A consumer of the runner's events, like the CLI and the tab.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from PIL import PngImagePlugin

from ..config import RunConfig, save_config
from ..files.paths import inside
from . import events as ev
from .study import objective_names, trial_value


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
        """The rows; a line cut short (the process was killed while writing it) is left out."""
        if not self.trials_file.exists():
            return []
        rows = []
        for line in self.trials_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


class ArtifactWriter:
    """Writes the run folder from the event stream.

    Images are encoded and written by a thread of their own while the run goes on (the next
    prompt set generates meanwhile); :meth:`saved` waits for them, and a trial's row is written
    only once its images are on disk."""

    def __init__(self, folder: RunFolder, config: RunConfig, save_images: bool = True):
        self.folder = folder
        self.config = config
        self.save_images = save_images
        self._images: dict[int | str, list[dict[str, Any]]] = {}  # by trial (-1: references; "confirm-N")
        self._cut_line = False
        self._saving: list[Future] = []
        self._saver: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.folder.path.mkdir(parents=True, exist_ok=True)
        save_config(self.config.absolute(), self.folder.path / "config.yaml")
        self._cut_line = _ends_mid_line(self.folder.trials_file)

    def saved(self) -> None:
        """Wait until every image handed over is on disk; the first failure is raised (a full
        disk: OSError)."""
        pending, self._saving = self._saving, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """The run ended: the images still being written are waited for (a failure is logged:
        every trial's images were waited for before it was told)."""
        try:
            self.saved()
        except Exception as e:  # noqa: BLE001 - only a trial cut short can have images pending here
            logging.getLogger("sd_optim").warning("an image of the run could not be written: %s", e)
        finally:
            if self._saver is not None:
                self._saver.shutdown(wait=True)
                self._saver = None

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.ImageScored):
            self._image(event)
            return
        if isinstance(event, (ev.ReferenceScored, ev.TrialFinished, ev.TrialConfirmed)):
            self.saved()  # a row names images that are on disk
        if isinstance(event, ev.ReferenceScored):
            self._append({"kind": "reference", "model": event.model, "value": event.value,
                          "per_payload": event.per_payload, "reason": event.reason,
                          "images": self._images.pop(-1, []), "time": time.time()})
        elif isinstance(event, ev.TrialFinished):
            self._append({
                "kind": "trial", "number": event.number, "state": event.state,
                "value": event.value, "params": event.params, "per_payload": event.per_payload,
                "scores": event.per_scorer, "timings": event.timings, "reason": event.reason,
                "images": self._images.pop(event.number, []), "time": time.time(),
                **({"intermediate": event.intermediate} if event.intermediate else {}),
                **({"objectives": event.objectives} if event.objectives else {}),
            })
        elif isinstance(event, ev.TrialConfirmed):
            self._append({"kind": "confirm", "number": event.number, "value": event.value,
                          "fresh_value": event.fresh_value, "combined": event.combined,
                          "per_payload": event.per_payload, "images": self._images.pop(f"confirm-{event.number}", []),
                          "time": time.time()})
        elif isinstance(event, ev.TrialMerged):
            pass
        elif isinstance(event, ev.NewBest):
            self.folder.best_recipe.write_text(event.recipe, encoding="utf-8")
            path = self.folder.trial_recipe(event.number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(event.recipe, encoding="utf-8")

    def add_missing_rows(self, study) -> list[int]:
        """A row for each finished trial of ``study`` that ``trials.jsonl`` lacks: trials a process
        left running when it ended (failed since), results a full disk kept out of the file. What
        the study knows goes in; the images' scores are not in the study. The numbers added."""
        have = {r.get("number") for r in self.folder.read_trials() if r.get("kind") == "trial"}
        added = []
        for t in study.get_trials(deepcopy=False):
            if t.number in have or t.state == optuna.trial.TrialState.RUNNING or \
                    t.state == optuna.trial.TrialState.WAITING:
                continue
            self._append({
                "kind": "trial", "number": t.number, "state": t.state.name, "value": trial_value(t),
                **({"objectives": dict(zip(objective_names(study), t.values))}
                   if t.values is not None and len(t.values) > 1 else {}),
                "params": t.params, "per_payload": t.user_attrs.get("per_payload", {}), "scores": {},
                "timings": trial_timings(t.user_attrs),
                "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason", ""), "images": [],
                **({"intermediate": dict(t.intermediate_values)} if t.intermediate_values else {}),
                "time": t.datetime_complete.timestamp() if t.datetime_complete else time.time(),
                "recovered": True,
            })
            added.append(t.number)
        return added

    def _append(self, row: dict[str, Any]) -> None:
        with self.folder.trials_file.open("a", encoding="utf-8") as f:
            # a line cut short by a killed process stays on a line of its own
            f.write(("\n" if self._cut_line else "") + json.dumps(row, default=str) + "\n")
        self._cut_line = False

    def _image(self, e: ev.ImageScored) -> None:
        entry: dict[str, Any] = {"payload": e.payload, "index": e.index, "seed": e.seed,
                                 "scores": e.scores}
        if self.save_images:
            sub = f"reference/{e.params.get('model', 'input')}" if e.trial < 0 else \
                f"confirm/{e.trial:05d}" if e.stage else f"{e.trial:05d}"
            path = self.folder.path / "images" / sub / f"{e.payload}-{e.index:02d}.png"
            inside(self.folder.path, path, "payloads.name")
            path.parent.mkdir(parents=True, exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", e.infotext or e.prompt)
            info.add_text("sd_optim", json.dumps({
                "trial": e.trial, "payload": e.payload, "index": e.index, "seed": e.seed,
                "prompt": e.prompt, "negative_prompt": e.negative_prompt, "scores": e.scores,
                "params": e.params, **({"stage": e.stage} if e.stage else {}),
            }, default=str))
            self._save_later(e.image, path, info)
            e.path = str(path)
            entry["path"] = str(path.relative_to(self.folder.path))
        self._images.setdefault(f"{e.stage}-{e.trial}" if e.stage else e.trial, []).append(entry)

    def _save_later(self, image, path: Path, info: PngImagePlugin.PngInfo) -> None:
        if self._saver is None:
            self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sd-optim images")
        self._saving.append(self._saver.submit(image.save, path, pnginfo=info))


def trial_timings(user_attrs: dict[str, Any]) -> dict[str, float]:
    """A study trial's timings: its ``seconds`` attribute, or the ``seconds_<part>`` ones that
    studies made before it have."""
    if isinstance(user_attrs.get("seconds"), dict):
        return dict(user_attrs["seconds"])
    return {k[len("seconds_"):]: v for k, v in user_attrs.items() if k.startswith("seconds_")}


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; it becomes ``path`` only when the block
    succeeds, so a full disk or a crash never leaves a cut-short file under the final name (which
    would then block a retry as "exists"). Never overwrites: FileExistsError if ``path`` exists."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield tmp
        try:
            os.link(tmp, path)  # fails when path exists, where a rename would replace it
        except FileExistsError:
            raise FileExistsError(f"{path} exists; choose another name (never overwritten)") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise FileExistsError(f"{path} exists; choose another name (never overwritten)") from None
            os.rename(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
