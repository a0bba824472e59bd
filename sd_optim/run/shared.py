"""A study shared by several processes (workers) through one database: the study-wide trial
limit, claiming the next trial under a lock, heartbeats, and the retry of a dead worker's trial.

Workers ask Optuna for trials through the database (``RDBStorage``); what Optuna leaves to its
caller is done here:

- **The limit is the study's** (its first worker's ``optimizer.trials``). ``claim_next`` counts
  the study's trials (finished, failed, pruned and running: not the waiting ones, nor a dead
  worker's trial that is run again, whose retry counts instead) and asks for a new one only under
  a lock every worker of the study takes (PostgreSQL: an advisory lock; MySQL: ``GET_LOCK``;
  SQLite: a lock file beside the database), so concurrent workers stop at exactly the limit.
- **A dead worker's trial fails and is run again.** Each running trial records a heartbeat every
  ``optimizer.heartbeat_s`` seconds (``Heartbeat``); once a heartbeat interval, a claim first
  fails the trials three intervals late with the reason and queues their parameters again,
  ``optimizer.retries`` times (``fail_dead_workers``).
- **Every trial names its worker** (``WORKER_ATTR``: host, process, WebUI or CLI, device).

The runner reaches these through ``feed.TrialFeed``, which claims a worker's next trial while one
runs and writes each result behind, on a thread of its own.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .study import trial_value

log = logging.getLogger("sd_optim")

WORKER_ATTR = "sd_optim.worker"  # user attr: the worker that ran the trial
LIMIT_ATTR = "sd_optim.trials"  # study user attr: the study's trial limit, set by its first worker
CONFIG_ATTR = "sd_optim.config"  # study user attr: the first worker's config (export from the database)
RETRY_ATTR = "sd_optim.retry_of"  # user attr: the trial whose worker died, run again
RETRIES_ATTR = "sd_optim.retries"  # user attr: the trials of those parameters that died so far
RAN_AGAIN_ATTR = "sd_optim.ran_again"  # user attr: a dead worker's trial whose retry takes its place in the limit
FAIL_REASON_ATTR = "fail_reason"
MISSED_BEATS = 3  # a trial whose heartbeat is this many intervals late belongs to a dead worker


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


def fail_dead_workers(study: optuna.Study, retries: int, silent: list[int] = ()) -> list[int]:
    """Running trials whose heartbeat stopped (their worker died), and the ``silent`` ones (that
    never beat), failed with the reason, their parameters queued again ``retries`` times at most;
    the numbers of the trials failed.

    Optuna's own ``fail_stale_trials`` fails first and calls back after, when a failed trial no
    longer takes attributes, so the reason is written here before the trial is failed (under the
    study's lock: no two workers fail the same trial)."""
    storage = study._storage
    grace = storage.get_heartbeat_interval() * MISSED_BEATS
    failed = []
    for trial_id in [*storage._get_stale_trial_ids(study._study_id), *silent]:
        trial = storage.get_trial(trial_id)
        worker = trial.user_attrs.get(WORKER_ATTR, {})
        who = f"{worker.get('host', '?')}:{worker.get('pid', '?')}" if worker else "unknown"
        history = [*trial.user_attrs.get(RETRIES_ATTR, []), trial.number]
        again = len(history) <= retries
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, f"worker died ({who}: no heartbeat for {grace} s)")
            if again:  # its retry takes its place in the study's limit
                storage.set_trial_user_attr(trial_id, RAN_AGAIN_ATTR, True)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker was only slow, and finished it meanwhile
        failed.append(trial.number)
        if not again:
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


def claim_next(study: optuna.Study, shared: SharedRun, dead_check: bool,
               distributions: dict[str, Any]) -> optuna.Trial | None:
    """The next trial of the study, or None when the study has its limit of trials. With
    ``dead_check``, dead workers' trials are failed first (and queued again). Under the study's
    lock only what must be: the count, and the new trial made (or a waiting one taken); its
    parameters are drawn after, as ``Study.ask`` draws them (the sampler reads every trial: no
    other worker waits for that)."""
    trial = None
    with shared.lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        if dead_check:
            grace = study._storage.get_heartbeat_interval() * MISSED_BEATS
            fail_dead_workers(study, shared.retries, shared.silent_trials(study._study_id, grace))
        counts = shared.lock.counts(study._study_id)
        if sum(n for state, n in counts.items() if state != "WAITING") >= shared.limit:
            return None
        if counts.get("WAITING"):  # queued first: a baseline, a dead worker's retry, one handed back
            trial = study.ask()  # its heartbeat is this module's (Heartbeat), not optimize's
        else:
            trial_id = study._storage.create_new_trial(study._study_id)
    if trial is None:
        study._thread_local.cached_all_trials = None  # as Study.ask does: the sampler reads the study afresh
        trial = optuna.Trial(study, trial_id)
    for name, distribution in distributions.items():
        trial._suggest(name, distribution)
    return trial


class Heartbeat:
    """Records the heartbeats of the trials this worker holds (the one running, the one claimed
    ahead, those whose result is still being written), on a thread of its own: the first beat
    at once when a trial is added, then every heartbeat interval."""

    def __init__(self, storage: optuna.storages.RDBStorage):
        self._storage = storage
        self._trial_ids: set[int] = set()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` from now on."""
        with self._lock:
            self._trial_ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sd-optim-heartbeat", daemon=True)
                self._thread.start()
        self._wake.set()

    def held(self) -> int:
        """How many trials this worker beats for."""
        with self._lock:
            return len(self._trial_ids)

    def holds(self, trial_id: int) -> bool:
        with self._lock:
            return trial_id in self._trial_ids

    def discard(self, trial_id: int) -> None:
        """No more beats for ``trial_id`` (it is finished, or handed back)."""
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _run(self) -> None:
        interval = self._storage.get_heartbeat_interval() or 1
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a database hiccup: beat again next time
                    log.warning("could not record the heartbeat of trial id %s: %s", trial_id, e)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._trial_ids.clear()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class StudyLock:
    """A lock every worker of one study takes around its claim of the next trial, and the count of
    the trials its limit counts, on one connection the worker keeps for its claims."""

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
            self._execute(*_acquire(dialect, self.key, self.name), reconnect=True)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        dialect = _dialect(self.url)
        if dialect in ("postgresql", "mysql") and self._conn is not None:
            try:
                self._conn.exec_driver_sql(*_release(dialect, self.key, self.name))
            except Exception:  # the connection is gone, and the lock with it
                self._drop_connection()
                raise

    def counts(self, study_id: int) -> dict[str, int]:
        """The study's trials by state (``RUNNING``, ``WAITING``, ``COMPLETE``, ...) but the dead
        workers' trials run again (their retries count instead), in one query on Optuna's
        ``trials`` and ``trial_user_attributes`` tables."""
        dialect = _dialect(self.url)
        key = "`key`" if dialect == "mysql" else '"key"'  # a reserved word in MySQL
        sql = ("SELECT state, COUNT(*) FROM trials t WHERE study_id = %s AND NOT EXISTS "
               f"(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.{key} = %s) "
               "GROUP BY state")
        if dialect == "sqlite":
            sql = sql.replace("%s", "?")
        rows = self._execute(sql, (int(study_id), RAN_AGAIN_ATTR), reconnect=False).all()
        return {str(getattr(state, "name", state)): int(n) for state, n in rows}

    def unbeaten(self, study_id: int) -> list[int]:
        """The study's running trials that have no heartbeat yet (ids)."""
        sql = ("SELECT trial_id FROM trials t WHERE study_id = %s AND state = 'RUNNING' AND NOT EXISTS "
               "(SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)")
        if _dialect(self.url) == "sqlite":
            sql = sql.replace("%s", "?")
        return [int(row[0]) for row in self._execute(sql, (int(study_id),), reconnect=False).all()]

    def _execute(self, sql: str, args: tuple, reconnect: bool):
        """``sql`` on the connection kept for the claims; with ``reconnect`` (taking the lock),
        on a new one if that one was lost (never while the lock is held: it went with it)."""
        try:
            return self._connection().exec_driver_sql(sql, args)
        except Exception:
            self._drop_connection()
            if not reconnect:
                raise
        return self._connection().exec_driver_sql(sql, args)

    def _connection(self):
        import sqlalchemy

        if self._conn is None:  # kept across claims (a checkout and its ping cost a round trip each)
            if self._engine is None:
                args = {"check_same_thread": False} if _dialect(self.url) == "sqlite" else {}  # closed by the run
                self._engine = sqlalchemy.create_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True,
                                                        connect_args=args)
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop_connection()
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
    unbeaten_since: dict[int, float] = field(default_factory=dict)  # trial id: first seen without a heartbeat

    def dead_check_due(self, heartbeat_s: int) -> bool:
        """Whether to look for dead workers' trials now: once a heartbeat interval (a worker is
        found dead only three intervals after its last beat anyway)."""
        now = time.monotonic()
        if now - self.last_check < heartbeat_s:
            return False
        self.last_check = now
        return True

    def silent_trials(self, study_id: int, grace: float) -> list[int]:
        """Other workers' running trials that have not beaten once in the ``grace`` seconds this
        worker has seen them (their worker died between making one and its first beat: Optuna
        finds only trials whose heartbeat stopped)."""
        now = time.monotonic()
        ids = [i for i in self.lock.unbeaten(study_id) if not self.heartbeat.holds(i)]
        self.unbeaten_since = {i: self.unbeaten_since.get(i, now) for i in ids}
        return [i for i, since in self.unbeaten_since.items() if now - since >= grace]

    def close(self) -> None:
        self.heartbeat.close()
        self.lock.close()


def since_best(study: optuna.Study, min_improvement: float, latest: tuple[int, float] | None = None) -> int:
    """Completed trials of the study since its last improvement of more than ``min_improvement``
    (in trial order): the patience early stopping counts for a shared study. ``latest``: this
    worker's last trial (number, value), whose result may still be on its way to the database."""
    values = {t.number: trial_value(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if latest is not None:
        values.setdefault(*latest)
    best, since = None, 0
    for _, value in sorted(values.items()):
        since = 0 if best is None or value > best + min_improvement else since + 1
        best = value if best is None or value > best else best
    return since
