"""What a user does with a finished run's trials: take any trial's recipe, save it as a checkpoint,
look at its images again (the original model is restored afterwards), or keep it loaded.

Each action opens the host's slot itself, so none may run while a run is live on that host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import optuna

from ..errors import ConfigError, Problem
from ..hosts.base import GeneratedImage, KeptMerge
from ..merging import MERGE_DTYPES, MergeEngine
from .runner import Runner, RunState, trial_infotext
from .study import chosen_trial, trial_value


class TrialTools:
    def __init__(self, runner: Runner):
        if runner.state is None:
            raise ConfigError([Problem("trial", "the run never started, so it has no trials")])
        self.runner = runner
        self.run: RunState = runner.state

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        done = [t for t in self.run.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        for t in done:
            if t.number == number:
                return t
        raise ConfigError([Problem("trial", f"no such completed trial in study {self.run.study.study_name!r} "
                                            f"(completed: {[t.number for t in done] or 'none'})", number)])

    def best_number(self) -> int:
        try:
            return chosen_trial(self.run.study).number
        except ValueError:
            raise ConfigError([Problem("trial", f"study {self.run.study.study_name!r} has no completed trial yet")]) \
                from None

    def recipe_file(self, number: int) -> Path:
        """The trial's ``.mecha`` recipe in the run folder (written on first use)."""
        t = self.trial(number)
        path = self.run.folder.trial_recipe(number)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.run.planner.recipe_text(t.params), encoding="utf-8")
        return path

    def save_checkpoint(self, number: int, name: str = "") -> Path:
        """The trial merged to a ``.safetensors`` file in the host's checkpoint folder."""
        t = self.trial(number)
        return self.runner.save_checkpoint(self.run, t, self.run.planner.recipe(t.params), name)

    def look(self, number: int) -> Iterator[tuple[str, GeneratedImage]]:
        """Merge the trial in again and render every prompt set; the original comes back after."""
        t = self.trial(number)
        host = self.runner.host
        engine = MergeEngine(device=host.device, merge_dtype=MERGE_DTYPES[self.run.config.merge_precision])
        try:
            with host.open_slot() as slot:
                engine.apply(self.run.planner.recipe(t.params), slot, self.run.model_config)
                for payload, job in self.run.jobs:
                    job = dataclasses.replace(job, infotext_params=trial_infotext(self.run.study, number,
                                                                                  t.params))
                    for image in host.generate(job, host.interrupted):
                        yield payload.name, image
        finally:
            engine.close()

    def keep(self, number: int) -> KeptMerge:
        """Leave the trial's merge loaded in the host (as ``after_run.keep_best`` does)."""
        t = self.trial(number)
        host = self.runner.host
        kept = KeptMerge(self.run.study.study_name, number, float(trial_value(t)), self.run.planner.recipe_text(t.params),
                         str(self.recipe_file(number)))
        engine = MergeEngine(device=host.device, merge_dtype=MERGE_DTYPES[self.run.config.merge_precision])
        try:
            with host.open_slot() as slot:
                engine.apply(self.run.planner.recipe(t.params), slot, self.run.model_config)
                slot.commit()
                slot.keep()
                host.mark_kept(kept)
        finally:
            engine.close()
        return kept
