"""Where a run's study lives while it runs, and how its trials reach the database.

A run's own study (SQLite ``study.db`` in its run folder, the default) is kept in memory while
the run goes on: the sampler asks and the runner tells at memory speed, and a background thread
writes each finished trial to the database in one transaction (Optuna's
``create_new_trial(template_trial=...)``) while the next trial generates. Nothing
is lost on a crash, because two cheap synchronous records stand beside it in the run folder:

- ``running.json`` names the trial in flight (number, parameters, process), written as it starts;
  a resume records a trial it names that the study lacks as failed, "interrupted (process
  ended)", as it would a RUNNING trial of a process that died;
- ``trials.jsonl`` gets each finished trial's row at once (the run folder's writer); a resume
  writes the rows the database lacks (a kill between a trial's end and its write) back into it.

A shared storage (``optimizer.storage`` set: several processes on one study) is written
directly, as Optuna does (:class:`DirectRecorder`): the database is what the processes share.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError, Problem
from .study import _HELD, OWNER_ATTR, _stale_reason, _this_process

log = logging.getLogger("sd_optim")

MARKER = "running.json"  # the trial in flight, in the run folder
RUNNER_ATTR = "sd_optim.running"  # the study's system attribute: which process runs it in memory
# the longest a write waits for the next generation to start (then the backlog is written at
# once: a run whose trials fail before generating still gets its study written)
WINDOW_WAIT_S = 2.0


class RecordingFailed(Exception):
    """The run's results cannot be written (the study's database, the run folder): the run stops
    rather than going on with results it could not keep."""


def trial_attrs(timings: dict[str, float], per_payload: dict[str, float],
                per_scorer: dict[str, dict[str, list[float]]], reason: str = "", pruned: bool = False
                ) -> dict[str, Any]:
    """A finished trial's user attributes (the runner's, and a row's written back on resume).
    The timings go in one attribute, ``seconds`` (each attribute is a row to write; studies made
    before have one ``seconds_<part>`` attribute per part). ``reason``: why it failed, or with
    ``pruned`` why it was pruned (``prune_reason``)."""
    attrs: dict[str, Any] = {"seconds": {k: round(v, 4) for k, v in timings.items()}}
    if per_payload or not reason:
        attrs["per_payload"] = per_payload
    ratings = {p: [round(v * 10, 2) for v in by_scorer["manual"]]
               for p, by_scorer in per_scorer.items() if "manual" in by_scorer}
    if ratings:  # the ratings by hand, kept for later
        attrs["manual_ratings"] = ratings
    if reason:
        attrs["prune_reason" if pruned else "fail_reason"] = reason
    return attrs


class DirectRecorder:
    """The study in its database, written as Optuna writes it (a shared storage)."""

    def __init__(self, study: optuna.Study):
        self.study = study

    def started(self, trial: optuna.Trial) -> None:
        pass

    def generating(self) -> None:
        pass

    def finished(self, number: int) -> None:
        pass

    def problem(self) -> str:
        return ""

    def close(self) -> str:
        return ""


class BufferedRecorder:
    """The run's study in memory (:attr:`study`), its finished trials written to the database
    ``db`` by a background thread; ``folder`` holds ``running.json``. Opening it claims the study
    for this process and first writes into ``db`` what the run folder has and it lacks
    (:func:`recover`: ``rows`` are ``trials.jsonl``'s)."""

    def __init__(self, db: optuna.Study, folder: Path, rows: list[dict[str, Any]],
                 distributions: dict[str, BaseDistribution], sampler: optuna.samplers.BaseSampler):
        self.db, self.folder = db, Path(folder)
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error = ""
        # set while the host generates: the writes wait for it, so that their Python (SQLAlchemy,
        # a few ms per trial) runs while the host waits on its device, not during the merge
        self._window = threading.Event()
        _claim(db)
        recover(db, self.folder, rows, distributions)
        self.study = _working_copy(db, sampler, self._later)
        # kept open: naming the next trial is one write, not a new file per trial
        self._marker = os.open(self.folder / MARKER, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        # trials the database had when the run opened it (WAITING ones: enqueued, forked)
        self._in_db = {t.number: t._trial_id for t in db.get_trials(deepcopy=False)}
        self._thread = threading.Thread(target=self._work, name="sd-optim study writer", daemon=True)
        self._thread.start()

    # --- the runner's side (its thread) ---------------------------------------------------

    def started(self, trial: optuna.Trial) -> None:
        """``running.json`` names ``trial`` (raises OSError when the run folder cannot be written)."""
        marker = {"study": self.db.study_name, "number": trial.number, "params": trial.params,
                  "owner": trial.user_attrs.get(OWNER_ATTR, _this_process())}
        data = json.dumps(marker, default=str).encode()
        os.lseek(self._marker, 0, os.SEEK_SET)
        os.write(self._marker, data)  # a kill between these two leaves a marker a resume ignores
        os.ftruncate(self._marker, len(data))

    def generating(self) -> None:
        """The host starts generating a trial's images: the writes waiting go now."""
        self._window.set()

    def finished(self, number: int) -> None:
        """Trial ``number`` (told in :attr:`study`) goes to the database while the next trial
        generates."""
        frozen = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number))
        self._window.clear()
        self._later(lambda: self._write(frozen))

    def close(self) -> str:
        """Wait for every write; "" when the database has the whole study, else why not (the
        run folder's records then let a resume complete it)."""
        self._later(self._release)
        self._window.set()
        self._queue.put(None)
        self._thread.join()
        os.close(self._marker)
        if not self._error:
            _remove(self.folder / MARKER)
        return self._error

    def problem(self) -> str:
        """Why the database cannot be written ("" while it can): the run stops after its trial."""
        return self._error

    def _later(self, write: Callable[[], None]) -> None:
        self._queue.put(write)

    # --- the writer thread ------------------------------------------------------------------

    def _work(self) -> None:
        while (write := self._queue.get()) is not None:
            if self._error:
                continue  # after a failed write, later ones would leave gaps in the numbering
            if not self._window.wait(WINDOW_WAIT_S):  # no generation lately: write the backlog now
                self._window.set()
            try:
                write()
            except Exception as e:  # noqa: BLE001 - a full disk, a locked database: the runner stops
                self._error = f"could not write the study: {type(e).__name__}: {e}"
                log.warning("%s", self._error)

    def _write(self, frozen: FrozenTrial) -> None:
        storage, study_id = self.db._storage, self.db._study_id
        if frozen.number in self._in_db:  # a WAITING trial the database has: fill it in
            _update(storage, self._in_db[frozen.number], frozen)
            return
        trial_id = storage.create_new_trial(study_id, template_trial=frozen)
        written = storage.get_trial_number_from_id(trial_id)
        if written != frozen.number:  # another process wrote to the study meanwhile
            log.warning("study %s: trial %d was written as trial %d (another process writes to this "
                        "study)", self.db.study_name, frozen.number, written)

    def _release(self) -> None:
        self.db._storage.set_study_system_attr(self.db._study_id, RUNNER_ATTR, "")


def _claim(db: optuna.Study) -> None:
    """Refuse a study that another live process runs in memory (two would number trials alike)."""
    owner = db._storage.get_study_system_attrs(db._study_id).get(RUNNER_ATTR, "")
    if owner and owner != _this_process() and not _stale_reason(owner, local_storage=True):
        raise ConfigError([Problem("optimizer.study", f"another process runs this study now ({owner}); "
                                                      "stop that run first", db.study_name)])
    db._storage.set_study_system_attr(db._study_id, RUNNER_ATTR, _this_process())


def _update(storage, trial_id: int, frozen: FrozenTrial) -> None:
    """A trial the database holds as WAITING, written field by field (several transactions; only
    enqueued and forked trials take this way)."""
    storage.set_trial_state_values(trial_id, TrialState.RUNNING)
    for name, value in frozen.params.items():
        dist = frozen.distributions[name]
        storage.set_trial_param(trial_id, name, dist.to_internal_repr(value), dist)
    for key, value in frozen.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in frozen.system_attrs.items():
        storage.set_trial_system_attr(trial_id, key, value)
    storage.set_trial_state_values(trial_id, frozen.state, frozen.values)


class _WorkingStorage(InMemoryStorage):
    """The in-memory study; study attributes set during the run also go to the database."""

    def __init__(self, later: Callable[[Callable[[], None]], None], db: optuna.Study):
        super().__init__()
        self._db_later, self._db = later, db

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        super().set_study_user_attr(study_id, key, value)
        self._db_later(lambda: self._db._storage.set_study_user_attr(self._db._study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        super().set_study_system_attr(study_id, key, value)
        self._db_later(lambda: self._db._storage.set_study_system_attr(self._db._study_id, key, value))


def _working_copy(db: optuna.Study, sampler, later) -> optuna.Study:
    """``db`` copied into memory, trial numbers and all."""
    storage = _WorkingStorage(later, db)
    quiet = logging.getLogger(InMemoryStorage.__module__)  # it logs every new study
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        study_id = InMemoryStorage.create_new_study(storage, db.directions, db.study_name)
    finally:
        quiet.setLevel(level)
    for key, value in db.user_attrs.items():
        InMemoryStorage.set_study_user_attr(storage, study_id, key, value)
    for key, value in db._storage.get_study_system_attrs(db._study_id).items():
        InMemoryStorage.set_study_system_attr(storage, study_id, key, value)
    for t in db.get_trials(deepcopy=False):
        storage.create_new_trial(study_id, template_trial=t)
    return optuna.load_study(study_name=db.study_name, storage=storage, sampler=sampler)


# --- a resume completes the database from the run folder -------------------------------------

def recover(db: optuna.Study, folder: Path, rows: list[dict[str, Any]],
            distributions: dict[str, BaseDistribution]) -> list[int]:
    """Write into ``db`` what the run folder has and it lacks: finished trials' rows (a kill
    between a trial's end and its write), then the trial ``running.json`` names as failed when its
    process has ended. The numbers written."""
    written = []
    have = len(db.get_trials(deepcopy=False))
    for row in sorted((r for r in rows if r.get("kind") == "trial" and isinstance(r.get("number"), int)),
                      key=lambda r: r["number"]):
        if row["number"] != have:
            continue  # in the study already (or a gap: never written out of order)
        template = _row_trial(row, distributions)
        if template is None:
            break
        db._storage.create_new_trial(db._study_id, template_trial=template)
        written.append(have)
        have += 1
    marker = _read_marker(folder / MARKER)
    if marker.get("study") == db.study_name and marker.get("number") == have \
            and (db.study_name, have) not in _HELD:
        reason = _stale_reason(str(marker.get("owner", "")), local_storage=True)
        template = _row_trial({"state": "FAIL", "params": marker.get("params", {}), "reason": reason},
                              distributions) if reason else None
        if template is not None:
            db._storage.create_new_trial(db._study_id, template_trial=template)
            written.append(have)
    return written


def _row_trial(row: dict[str, Any], distributions: dict[str, BaseDistribution]) -> FrozenTrial | None:
    """A ``trials.jsonl`` row as a trial to write; None (and a warning) when it does not fit."""
    try:
        state = TrialState[row["state"]]
        params = dict(row.get("params") or {})
        attrs = trial_attrs(row.get("timings") or {}, row.get("per_payload") or {}, row.get("scores") or {},
                            row.get("reason") or "", pruned=state == TrialState.PRUNED)
        objectives = row.get("objectives") if state == TrialState.COMPLETE else None
        trial = optuna.trial.create_trial(
            state=state, value=row.get("value") if state in (TrialState.COMPLETE, TrialState.PRUNED)
            and not objectives else None, values=list(objectives.values()) if objectives else None,
            params=params, distributions={k: distributions[k] for k in params}, user_attrs=attrs,
            intermediate_values={int(k): float(v) for k, v in (row.get("intermediate") or {}).items()})
        if isinstance(row.get("time"), (int, float)):
            trial.datetime_complete = datetime.fromtimestamp(row["time"])
        return trial
    except (KeyError, ValueError, TypeError) as e:
        log.warning("trial %s of the run folder cannot be written into the study: %s", row.get("number"), e)
        return None


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)

