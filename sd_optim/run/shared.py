"""A study shared by several processes (workers) through one database: the study-wide trial
limit, claiming the next trial under a lock, heartbeats, and the retry of a dead worker's trial.

Workers ask Optuna for trials through the database (``RDBStorage``); what Optuna leaves to its
caller is done here:

- **The limit is the study's** (its first worker's ``optimizer.trials``). ``claim_next`` counts
  the study's trials (finished, failed, pruned and running) and asks for a new one only under a
  lock every worker of the study takes (PostgreSQL: an advisory lock; MySQL: ``GET_LOCK``;
  SQLite: a lock file beside the database), so concurrent workers stop at exactly the limit.
- **A dead worker's trial fails and is run again.** Each running trial records a heartbeat every
  ``optimizer.heartbeat_s`` seconds (``Heartbeat``); once a heartbeat interval, a claim first
  fails the trials three intervals late with the reason and queues their parameters again,
  ``optimizer.retries`` times (``fail_dead_workers``).
- **Every trial names its worker** (``WORKER_ATTR``: host, process, WebUI or CLI, device).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger("sd_optim")

WORKER_ATTR = "sd_optim.worker"  # user attr: the worker that ran the trial
LIMIT_ATTR = "sd_optim.trials"  # study user attr: the study's trial limit, set by its first worker
CONFIG_ATTR = "sd_optim.config"  # study user attr: the first worker's config (export from the database)
RETRY_ATTR = "sd_optim.retry_of"  # user attr: the trial whose worker died, run again
RETRIES_ATTR = "sd_optim.retries"  # user attr: the trials of those parameters that died so far
FAIL_REASON_ATTR = "fail_reason"
MISSED_BEATS = 3  # a trial whose heartbeat is this many intervals late belongs to a dead worker
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def worker_id() -> str:
    """This process among the study's workers: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_info(kind: str, device: Any) -> dict[str, Any]:
    """What a trial records of the worker that ran it (``kind``: "cli" or the WebUI's name)."""
    gpu = ""
    if getattr(device, "type", "") == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(device)
    return {"host": socket.gethostname(), "pid": os.getpid(), "kind": kind,
            "device": str(device), "gpu": gpu}


def shared_storage(url: str, *, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats (``MISSED_BEATS`` late: a dead worker's trial)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s,
                                          grace_period=MISSED_BEATS * heartbeat_s)


def fail_dead_workers(study: optuna.Study, retries: int) -> list[int]:
    """Running trials whose heartbeat stopped (their worker died) failed with the reason, their
    parameters queued again ``retries`` times at most; the numbers of the trials failed.

    Optuna's own ``fail_stale_trials`` fails first and calls back after, when a failed trial no
    longer takes attributes, so the reason is written here before the trial is failed (under the
    study's lock: no two workers fail the same trial)."""
    storage = study._storage
    grace = storage.get_heartbeat_interval() * MISSED_BEATS
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        worker = trial.user_attrs.get(WORKER_ATTR, {})
        who = f"{worker.get('host', '?')}:{worker.get('pid', '?')}" if worker else "unknown"
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, f"worker died ({who}: no heartbeat for {grace} s)")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker was only slow, and finished it meanwhile
        failed.append(trial.number)
        history = [*trial.user_attrs.get(RETRIES_ATTR, []), trial.number]
        if len(history) > retries:
            log.warning("trial %d of a dead worker is not run again: retried %d times already",
                        trial.number, len(history) - 1)
            continue
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: history[0], RETRIES_ATTR: history})
    return failed


def stored_config(config) -> dict[str, Any]:
    """The config a shared study keeps, so that its trials can be exported from any machine that
    reaches the database: paths made absolute, the storage URL (and its password) left out."""
    data = config.absolute().to_dict()
    data.get("optimizer", {}).pop("storage", None)
    return data


def counted(study: optuna.Study) -> int:
    """The trials the study's limit counts: finished, failed, pruned and running."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def claim_next(study: optuna.Study, lock: StudyLock, limit: int, retries: int | None,
               distributions: dict[str, Any]) -> optuna.Trial | None:
    """The next trial of the study, or None when the study has its ``limit`` of trials. With
    ``retries`` (not None), dead workers' trials are failed first (and queued again), all under
    the study's lock."""
    with lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        if retries is not None:
            fail_dead_workers(study, retries)
        if counted(study) >= limit:
            return None
        return study.ask(distributions)  # its heartbeat is this module's (Heartbeat), not optimize's


class Heartbeat:
    """Records the heartbeat of the trial this worker runs, on a thread of its own: the first
    beat at once when a trial starts, then every heartbeat interval."""

    def __init__(self, storage: optuna.storages.RDBStorage):
        self._storage = storage
        self._trial_id: int | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def beat_for(self, trial_id: int | None) -> None:
        """Beat for ``trial_id`` from now on (None: no trial running)."""
        with self._lock:
            self._trial_id = trial_id
            if self._thread is None and trial_id is not None:
                self._thread = threading.Thread(target=self._run, name="sd-optim-heartbeat", daemon=True)
                self._thread.start()
        if trial_id is not None:
            self._wake.set()

    def _run(self) -> None:
        interval = self._storage.get_heartbeat_interval() or 1
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                trial_id = self._trial_id
            if trial_id is None:
                continue
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as e:  # noqa: BLE001 - a database hiccup: beat again next time
                log.warning("could not record the heartbeat of trial id %s: %s", trial_id, e)

    def close(self) -> None:
        with self._lock:
            self._closed, self._trial_id = True, None
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class StudyLock:
    """A lock every worker of one study takes around its claim of the next trial."""

    def __init__(self, url: str, study_name: str):
        self.url, self.name = url, study_name
        self.key = zlib.crc32(f"sd_optim:{study_name}".encode())  # PostgreSQL's advisory lock id
        self._engine = None
        self._conn = None
        self._file = None

    def __enter__(self) -> None:
        dialect = _dialect(self.url)
        if dialect == "sqlite":
            self._file = open(_lock_file(self.url), "a+")  # held until __exit__
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif dialect in ("postgresql", "mysql"):
            self._conn = self._connection()
            self._conn.exec_driver_sql(*_acquire(dialect, self.key, self.name))

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            dialect = _dialect(self.url)
            try:
                self._conn.exec_driver_sql(*_release(dialect, self.key, self.name))
            finally:
                self._conn.close()
                self._conn = None

    def _connection(self):
        import sqlalchemy

        if self._engine is None:  # one connection kept for the claims (a new one costs ~10 ms)
            self._engine = sqlalchemy.create_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _dialect(url: str) -> str:
    """The database of a storage URL: sqlite, postgresql, mysql, ..."""
    name = url.split(":", 1)[0].split("+", 1)[0].lower()
    return "postgresql" if name == "postgres" else name


def _acquire(dialect: str, key: int, name: str) -> tuple[str, Any]:
    if dialect == "postgresql":
        return f"SELECT pg_advisory_lock({int(key)})", ()
    return "SELECT GET_LOCK(%s, 600)", (f"sd_optim:{name}"[:64],)


def _release(dialect: str, key: int, name: str) -> tuple[str, Any]:
    if dialect == "postgresql":
        return f"SELECT pg_advisory_unlock({int(key)})", ()
    return "SELECT RELEASE_LOCK(%s)", (f"sd_optim:{name}"[:64],)


def _lock_file(url: str) -> Path:
    path = Path(url.split(":///", 1)[1])
    return path.with_name(path.name + ".sd-optim.lock")


@dataclass
class SharedRun:
    """What a worker of a shared study holds while it runs."""

    lock: StudyLock
    heartbeat: Heartbeat
    limit: int  # the study's trial limit (``optimizer.trials``), across its workers
    retries: int  # how many times a dead worker's trial is run again
    worker: dict[str, Any]  # WORKER_ATTR of this worker's trials

    last_check: float = float("-inf")  # when this worker last looked for dead workers' trials

    def dead_check_due(self, heartbeat_s: int) -> bool:
        """Whether to look for dead workers' trials now: once a heartbeat interval (a worker is
        found dead only three intervals after its last beat anyway)."""
        now = time.monotonic()
        if now - self.last_check < heartbeat_s:
            return False
        self.last_check = now
        return True

    def close(self) -> None:
        self.heartbeat.close()
        self.lock.close()


def since_best(study: optuna.Study, min_improvement: float) -> int:
    """Completed trials of the study since its last improvement of more than ``min_improvement``
    (in trial order): the patience early stopping counts for a shared study."""
    best, since = None, 0
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        since = 0 if best is None or t.value > best + min_improvement else since + 1
        best = t.value if best is None or t.value > best else best
    return since
