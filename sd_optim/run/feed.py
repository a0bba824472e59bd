"""A worker's trials of a shared study, claimed one ahead and told behind, so that the trial loop
does not wait on the database.

Every database call of a worker's trials (claiming the next trial under the study's lock,
naming the worker, the result's attributes and the value) runs on one thread of its own, in
order: while trial *k* merges, generates and scores, trial *k+1* is claimed; *k*'s result is
written while *k+1* runs, before *k+2* is claimed (so the sampler has it). A trial claimed ahead
that the worker does not run (it stops, or reaches its own ``--trials``) is handed back: it waits
in the study with the parameters it was given, and the next worker that claims runs it. A worker
that finds the study full waits while trials still run on other workers (one may be a dead
worker's, to be failed and run again), so that the study ends with every trial finished.

A write that fails is raised in the trial loop at its next claim, or when the feed is settled at
the end of the run (``RecordingFailed``): the run stops, as when a direct write fails; the trial
is in the worker's ``trials.jsonl``, and in the study its heartbeat stops, so another worker
fails it and runs its parameters again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import optuna
from optuna.trial import TrialState

from .recorder import RecordingFailed
from .shared import WORKER_ATTR, SharedRun, claim_next

log = logging.getLogger("sd_optim")

DRAIN_POLL_S = 1.0  # how often a worker that found the study full looks again while trials run elsewhere


class TrialFeed:
    """``take`` the next trial, ``tell`` its result; ``settle`` at the end of the loop."""

    def __init__(self, study: optuna.Study, shared: SharedRun, distributions: dict[str, Any], heartbeat_s: int):
        self.study, self.shared = study, shared
        self._distributions, self._heartbeat_s = distributions, heartbeat_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sd-optim-study")
        self._ahead: Future | None = None  # the claim of the next trial, in flight or done
        self._writes: list[tuple[int, Future]] = []  # (trial number, its result's write)

    def take(self, more: bool, should_stop: Callable[[], bool]) -> optuna.Trial | None:
        """The next trial, or None when the study has all its trials (and none runs elsewhere
        any more) or ``should_stop``; with ``more`` (another trial will follow), the claim of
        the one after it starts at once."""
        self._raise_failed_write()
        future, self._ahead = self._ahead or self._pool.submit(self._claim), None
        trial = future.result()
        if trial is None:
            trial = self._drain(should_stop)
        if trial is not None and more:
            self._ahead = self._pool.submit(self._claim)
        return trial

    def tell(self, trial: optuna.Trial, attrs: dict[str, Any], value: float | None = None,
             state: TrialState = TrialState.COMPLETE) -> None:
        """The trial's attributes, then its value (or its state), written behind."""
        self._writes.append((trial.number, self._pool.submit(self._write, trial, attrs, value, state)))

    def flush(self) -> None:
        """Every result told so far is in the database (RecordingFailed: one could not be written)."""
        writes, self._writes = self._writes, []
        for number, future in writes:
            _written(number, future)

    def settle(self) -> None:
        """The end of the loop: the trial claimed ahead handed back, every result written."""
        try:
            self.hand_back()
        finally:
            self.flush()

    def hand_back(self) -> None:
        """The trial claimed ahead back in the study, waiting (with its parameters) for a worker."""
        future, self._ahead = self._ahead, None
        if future is None:
            return
        try:
            trial = future.result()
        except Exception as e:  # noqa: BLE001 - a claim nobody will run: nothing to hand back
            log.warning("the claim of the next trial failed: %s", e)
            return
        if trial is not None:
            self._pool.submit(self._give_back, trial).result()

    def close(self) -> None:
        """Settled (what cannot be written is logged: the run is ending anyway), thread stopped."""
        try:
            self.settle()
        except RecordingFailed as e:
            log.warning("%s", e)
        finally:
            self._pool.shutdown(wait=True)

    def _drain(self, should_stop: Callable[[], bool]) -> optuna.Trial | None:
        """The study has all its trials, but some still run on other workers: one may belong to
        a worker that died, to be failed and run again here. Wait while they run (this worker's
        results written first, so that no worker waits for them), claiming again each
        ``DRAIN_POLL_S``; None once none runs elsewhere, or when the run stops."""
        while not should_stop():
            self.flush()
            if not self._on_thread(self._others_running):
                return None
            time.sleep(DRAIN_POLL_S)
            trial = self._on_thread(self._claim)
            if trial is not None:
                return trial
        return None

    def _on_thread(self, fn: Callable[[], Any]) -> Any:
        return self._pool.submit(fn).result()

    # --- on the feed's thread ----------------------------------------------------------------------

    def _claim(self) -> optuna.Trial | None:
        shared = self.shared
        trial = claim_next(self.study, shared, shared.dead_check_due(self._heartbeat_s), self._distributions)
        if trial is not None:
            shared.heartbeat.add(trial._trial_id)
            trial.set_user_attr(WORKER_ATTR, shared.worker)
        return trial

    def _others_running(self) -> bool:
        counts = self.shared.lock.counts(self.study._study_id)
        return counts.get("RUNNING", 0) > self.shared.heartbeat.held()

    def _write(self, trial: optuna.Trial, attrs: dict[str, Any], value: float | None, state: TrialState) -> None:
        try:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        finally:
            self.shared.heartbeat.discard(trial._trial_id)

    def _give_back(self, trial: optuna.Trial) -> None:
        try:
            self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
        except Exception as e:  # noqa: BLE001 - its heartbeat stops: another worker fails it and runs it again
            log.warning("trial %d, claimed ahead, could not be handed back: %s", trial.number, e)
        finally:
            self.shared.heartbeat.discard(trial._trial_id)

    # --- helpers ----------------------------------------------------------------------------------

    def _raise_failed_write(self) -> None:
        """A result that could not be written, raised in the trial loop (the writes still in
        flight stay where they are)."""
        if any(future.done() and future.exception() is not None for _, future in self._writes):
            self.flush()
        self._writes = [(n, f) for n, f in self._writes if not f.done()]


def _written(number: int, future: Future) -> None:
    try:
        future.result()
    except Exception as e:
        raise RecordingFailed(f"could not record trial {number}: {type(e).__name__}: {e}") from e
