"""The optimizer loop, written once: ask -> recipe -> merge into the slot -> generate -> score -> tell.

:meth:`Runner.events` is a generator of typed events (:mod:`sd_optim.run.events`). A trial that
raises is told to Optuna as FAIL with its reason; a stop request ends the run at the next image
boundary and the trial in flight is recorded as failed ("stopped"), never scored on a partial
set of images; the host's slot restores the original weights on every exit path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from ..config import Payload, RunConfig
from ..errors import ConfigError, Problem, StudyMismatchError
from ..files.inputs import file_hash
from ..files.paths import inside, safe_component
from ..hosts.base import GenerationJob, Host, KeptMerge, Slot
from ..merging import MERGE_DTYPES, MergeEngine
from ..scoring import (
    ImageToScore,
    ScoreContext,
    Scorer,
    ScoringStopped,
    available_scorers,
    balanced,
    build_scorers,
    combine_trial,
    objective_values,
)
from ..search.planning import Planner, make_planner
from ..search.recipes import recipe_text
from . import events as ev
from .artifacts import ArtifactWriter, RunFolder, new_file
from .feed import TrialFeed
from .recorder import BufferedRecorder, DirectRecorder, RecordingFailed, trial_attrs
from .scoring_queue import ScoringQueue
from .shared import (
    CONFIG_ATTR,
    LIMIT_ATTR,
    Heartbeat,
    SharedRun,
    StudyLock,
    shared_storage,
    since_best,
    stored_config,
    worker_id,
    worker_info,
)
from .study import (
    CONFIRM_ATTR,
    best_trial,
    check_study_name,
    chosen_trial,
    claim_trial,
    discard_study,
    existing_studies,
    hand_over_if_slow,
    join_study,
    make_pruner,
    make_sampler,
    new_study_folder,
    objective_names,
    open_study,
    pareto_front,
    release_trial,
    storage_url,
    study_name,
    trial_value,
)
from .warm import COARSE_SUFFIX, START_ATTR, coarse_config, fine_config, start_points
from .wildcards import WildcardError, expand

log = logging.getLogger("sd_optim")

# Runner.history keeps this many of the latest events: a few hundred trials' worth, so a long run
# holds a bounded amount whatever its length (trials.jsonl and the study keep every trial).
HISTORY_KEPT = 2000


class RunStopped(Exception):
    """The user asked the run to stop (Stop button, Interrupt, Ctrl-C)."""


class TrialPruned(Exception):
    """The pruner stopped a trial between its prompt sets (the trial is told PRUNED, not failed):
    why, the raw scores of the sets it finished and the running score reported after each."""

    def __init__(self, reason: str, per_scorer: dict[str, dict[str, list[float]]], intermediate: dict[int, float]):
        super().__init__(reason)
        self.reason, self.per_scorer, self.intermediate = reason, per_scorer, intermediate


class TrialNotStarted(RecordingFailed):
    """The next trial could not be had from the study (or a result written behind was refused
    meanwhile): the run stops before it starts."""


class RunControl:
    """Thread-safe controls a UI or a signal handler can use while a run is live."""

    def __init__(self, trials: int | None = None, ratings=None):
        self.ratings = ratings  # a RatingDesk when a person can rate images (the tab), else None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self.trial_limit = trials
        self.stop_reason = "stopped"
        # set while the slot puts the original weights back: a hard stop (a second Ctrl-C) must
        # not cut that short
        self.restoring = False

    def stop(self, reason: str = "stopped") -> None:
        self.stop_reason = reason
        self._stop.set()
        self._resume.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def wait_if_paused(self, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Wait until resumed or stopped, or until ``interrupted()`` (the WebUI's Interrupt button,
        which cannot call :meth:`stop`) says so."""
        # A bounded wait in a loop, not one unbounded wait, keeps Ctrl-C working in the main thread.
        while not self._resume.wait(0.5):
            if interrupted():
                return


@dataclass
class RunOptions:
    resume: str = ""  # the name of the study to continue
    fork: str = ""  # the name of the study whose parameter sets seed a new one
    trials: int | None = None  # overrides optimizer.trials (a worker: its own trials at most)
    save_images: bool = True
    join: bool = False  # a worker of the shared study optimizer.study at optimizer.storage
    worker_kind: str = ""  # what a trial records as its worker's kind (default: the host's name)


@dataclass
class _Outcomes:
    """This session's trial outcomes, for the run's verdict (a run whose every trial failed
    is an error, not a success with no result)."""

    completed: int = 0
    pruned: int = 0
    failed: int = 0  # failures other than the trial a stop request cut short
    last_error: str = ""

    def add(self, finished: ev.TrialFinished, stopping: bool) -> None:
        if finished.state == "COMPLETE":
            self.completed += 1
        elif finished.state == "PRUNED":
            self.pruned += 1
        elif not stopping:
            self.failed += 1
            self.last_error = finished.reason

    def fields(self) -> dict[str, Any]:
        failure = ""
        if self.failed and not self.completed and not self.pruned:
            failure = f"every trial failed ({self.failed} of {self.failed}); the last: {self.last_error}"
        return {"completed": self.completed, "pruned": self.pruned, "failure": failure}


@dataclass
class _Progress:
    """Where a run's loop stands."""

    limit: int
    best: float | None
    ran: int = 0
    since_best: int = 0
    reason: str | None = None  # why the loop ended; None while it goes on
    outcomes: _Outcomes = field(default_factory=_Outcomes)


@dataclass
class RunState:
    """One run's state from the moment it is prepared: what every step of the loop shares, and
    what the run's consumers (the tab, the trial tools) read of it afterwards.

    ``engine`` and ``slot`` are set only while the loop runs; ``scorers`` (their models) are
    given back when the run ends. ``config`` is the runner's own object: a live adjustment of the
    trial limit or early stopping reaches the loop."""

    config: RunConfig
    model_config: str
    planner: Planner
    recorder: BufferedRecorder | DirectRecorder  # the study, and how it reaches its database
    folder: RunFolder
    jobs: list[tuple[Payload, GenerationJob]]
    scorers: list[Scorer]
    progress: _Progress
    engine: MergeEngine | None = None
    slot: Slot | None = None
    writer: ArtifactWriter | None = None  # the run folder's, once it is started
    scoring: ScoringQueue = field(default_factory=ScoringQueue)  # scores a set while the next generates
    last_recipe: tuple[int, Any] | None = None  # (trial number, recipe) of the latest merge
    shared: SharedRun | None = None  # a worker of a shared study: its lock, heartbeat, limit
    feed: TrialFeed | None = None  # a worker's trials, claimed ahead and told behind
    pruning: bool = False  # optimizer.pruner set: each prompt set's running score reported, trials pruned
    confirmed: tuple[int, float] | None = None  # optimizer.confirm_top's winner and its combined value
    slow_suggests: list[float] = field(default_factory=list)  # the sampler's latest slow suggestions in a row
    sampler_note: str = ""  # why the sampler was handed over to TPE (once per run)

    def best_text(self, number: int, params: dict[str, Any]) -> str:
        """Trial ``number``'s recipe as text (the recipe it merged, when it is the latest)."""
        if self.last_recipe is not None and self.last_recipe[0] == number:
            return recipe_text(self.last_recipe[1])
        return self.planner.recipe_text(params)

    @property
    def study(self) -> optuna.Study:
        """The study the run asks and tells (in memory for a run's own study.db)."""
        return self.recorder.study

    def release(self) -> None:
        """The run ended: drop what holds models (the engine's cache, the scorers' weights)."""
        self.engine, self.slot, self.scorers = None, None, []


@dataclass
class Runner:
    config: RunConfig
    host: Host
    options: RunOptions = field(default_factory=RunOptions)
    control: RunControl = field(default_factory=RunControl)
    engine: MergeEngine | None = None
    # the latest events, images without their pixels (the listeners got those: the artifacts
    # writer saved them, the tab keeps the latest and the best trial's)
    history: deque[ev.Event] = field(default_factory=lambda: deque(maxlen=HISTORY_KEPT))
    tally: ev.RunTally = field(default_factory=ev.RunTally)  # the status, without scanning history
    listeners: list[Callable[[ev.Event], None]] = field(default_factory=list)
    state: RunState | None = None  # the run's state once it is prepared and its folder started
    coarse_study: str = ""  # optimizer.coarse_trials: the coarse stage's study, once it ran

    def _emit(self, event: ev.Event) -> ev.Event:
        self.tally.add(event)
        self.history.append(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as e:  # the run folder writer: what cannot be kept must not go on
                raise RecordingFailed(f"could not record the run: {type(e).__name__}: {e}") from e
        if isinstance(event, ev.ImageScored):
            # a run of 1,000 trials x 4 images would otherwise hold every image it made
            self.history[-1] = dataclasses.replace(event, image=None)
        return event

    def _emit_quietly(self, event: ev.Event) -> ev.Event:
        """:meth:`_emit` while the run is already ending because recording failed."""
        try:
            return self._emit(event)
        except RecordingFailed as e:
            log.warning("%s", e)
            return event

    def should_stop(self) -> bool:
        if self.host.interrupted() and not self.control.stopping:
            self.control.stop(self.host.stop_reason())
        return self.control.stopping

    # --- set-up ------------------------------------------------------------------------------

    def _prepare(self) -> RunState:
        """Everything that can refuse the run, first; the study is opened (created) last, so a
        refused run leaves nothing behind."""
        cfg = self.config
        model_config = self.host.model_config()
        planner = make_planner(cfg, model_config)
        self._check_payloads()
        scorers = self._scorers()
        jobs = self._jobs()
        pruner = make_pruner(cfg.optimizer.pruner, cfg.optimizer.pruner_options, len(jobs))
        start = start_points(cfg, planner.space) if not (self.options.resume or self.options.fork) else []
        if self.options.join:
            recorder, folder, shared = self._join_study(planner, model_config, jobs, start)
            recorder.study.pruner = pruner or optuna.pruners.NopPruner()
            progress = _Progress(self.options.trials or shared.limit, _best(recorder.study))
            feed = TrialFeed(recorder.study, shared, planner.space.distributions(), cfg.optimizer.heartbeat_s)
            return RunState(cfg, model_config, planner, recorder, folder, jobs, scorers, progress,
                            shared=shared, feed=feed, pruning=pruner is not None)
        recorder, folder = self._open_study(planner, model_config, jobs, start)
        recorder.study.pruner = pruner or optuna.pruners.NopPruner()
        progress = _Progress(self.options.trials or cfg.optimizer.trials, _best(recorder.study))
        return RunState(cfg, model_config, planner, recorder, folder, jobs, scorers, progress,
                        pruning=pruner is not None)

    def _recorder(self, study: optuna.Study, folder: RunFolder, planner: Planner):
        """The run's own study.db is run in memory and written behind the trials; a storage the
        user named (maybe shared with other processes) is written directly."""
        if self.config.optimizer.storage:
            return DirectRecorder(study)
        return BufferedRecorder(study, folder.path, folder.read_trials(), planner.space.distributions(),
                                study.sampler)

    def _scorers(self):
        cfg = self.config
        unknown = unknown_scorer_problems([s.name for s in cfg.scorers])
        if unknown:
            raise ConfigError(unknown)
        scorers = build_scorers(cfg.absolute().scorers,
                                models_dir=cfg.resolve_path(cfg.models_dir) if cfg.models_dir else None,
                                device=self.host.device)
        problems = [Problem(f"scorers[{i}]", p) for i, s in enumerate(scorers) for p in s.check_ready()]
        if self.control.ratings is None:
            problems += [Problem(f"scorers[{i}]", f"{s.name} rates images by hand, which needs the Optimize Merge "
                                 "tab (the WebUI's, or python -m sd_optim app); the CLI and the API cannot ask a "
                                 "person") for i, s in enumerate(scorers) if s.needs_person]
        if problems:
            raise ConfigError(problems)
        return scorers

    def _fingerprint(self, planner: Planner, model_config: str, hashes: dict[str, str],
                     jobs: list[tuple[Payload, GenerationJob]]) -> dict[str, Any]:
        """What makes two runs' trials comparable: resuming refuses when any of it differs.

        Files enter by content hash, not path; prompts as expanded (wildcards included)."""
        cfg = self.config
        return {
            "mode": cfg.mode,
            "model_config": model_config,
            "models": [[m.name, hashes[m.name]] for m in cfg.models],  # order gives the roles
            "base_model": cfg.base_model,
            "host_model": cfg.host_model,
            "device": self.host.device.type,
            "loras": [[lo.apply_to, file_hash(cfg.resolve_path(lo.path)), lo.strength] for lo in cfg.loras],
            **planner.fingerprint(),
            "space": planner.space.fingerprint(),
            "payloads": [_payload_fp(p, job) for p, job in jobs],
            "scorers": [[s.name, s.weight, s.options] for s in cfg.absolute().scorers],
            # raw scores combined: a different value; (normalised, the default, adds nothing, so
            # studies made before normalising existed still resume)
            "scoring": [cfg.scoring.scorer_mean, cfg.scoring.payload_mean, *([] if cfg.scoring.normalize else ["raw"])],
            # several objectives: the study's directions (one study, one set of objectives)
            **({"objectives": cfg.scoring.objectives} if cfg.scoring.objectives else {}),
        }

    def _open_study(self, planner: Planner, model_config: str, jobs, start: list[tuple[dict[str, Any], str]]):
        cfg, opt = self.config, self.config.optimizer
        distributions = planner.space.distributions()
        sampler = make_sampler(opt.sampler, opt.sampler_options, opt.seed, distributions,
                               budget=self.options.trials or opt.trials)
        hashes = {m.name: file_hash(cfg.resolve_path(m.path)) for m in cfg.models}
        for flag, given in (("--resume", self.options.resume), ("--fork", self.options.fork)):
            if given:
                check_study_name(flag, given)
        name = self.options.resume or study_name(opt.study, planner.label, [m.name for m in cfg.models])
        out = cfg.resolve_path(cfg.output_dir)
        if out.exists() and not out.is_dir():
            raise ConfigError([Problem("output_dir", "not a folder", str(out))])
        inside(out, out / name, "optimizer.study")  # a link planted there would take the writes
        if not self.options.resume:
            name = new_study_folder(out, name, explicit=bool(opt.study), storage=opt.storage)
            inside(out, out / name, "optimizer.study")
        folder = RunFolder(out / name)
        if self.options.resume and not opt.storage and not (folder.path / "study.db").exists():
            known = sorted(d.name for d in out.glob("*") if (d / "study.db").exists()) if out.is_dir() else []
            raise ConfigError([Problem("--resume", f"no study named {name!r} in {out} "
                                                   f"(studies: {', '.join(known) or 'none'})")])
        new_dirs = [p for p in (folder.path, out) if not p.exists()] if not opt.storage else []
        new_db = None if opt.storage or (folder.path / "study.db").exists() else folder.path / "study.db"
        if not opt.storage:
            folder.path.mkdir(parents=True, exist_ok=True)
        storage = storage_url(opt.storage, folder.path)
        fork_storage = storage_url("", out / self.options.fork) \
            if self.options.fork and not opt.storage else ""
        try:
            study = open_study(name=name, storage=storage, sampler=sampler,
                               fingerprint=self._fingerprint(planner, model_config, hashes, jobs),
                               resume=bool(self.options.resume), fork_from=self.options.fork,
                               fork_storage=fork_storage, distributions=distributions)
            try:
                self._annotate(study, planner, hashes, start)
                recorder = self._recorder(study, folder, planner)
            except BaseException:
                if not self.options.resume:
                    discard_study(name, storage)
                raise
        except BaseException:
            _remove_new(new_db, new_dirs)  # a refused run leaves no empty study.db behind
            raise
        return recorder, folder

    def _join_study(self, planner: Planner, model_config: str, jobs, start: list[tuple[dict[str, Any], str]]):
        """A worker of the shared study ``optimizer.study`` in the database ``optimizer.storage``:
        created by the first worker, joined by the others (refused when what they run differs);
        each worker has its own run folder, ``<output_dir>/<study>/<host>-<pid>``."""
        cfg, opt = self.config, self.config.optimizer
        name = _shared_study_name(opt.storage, opt.study)
        hashes = {m.name: file_hash(cfg.resolve_path(m.path)) for m in cfg.models}
        out = cfg.resolve_path(cfg.output_dir)
        folder = RunFolder(out / name / worker_id())
        inside(out, folder.path, "optimizer.study")
        lock = StudyLock(opt.storage, name)
        try:
            with lock:  # one worker at a time creates the tables and the study, or checks it
                storage, study = self._create_or_join(name, planner, model_config, jobs, hashes, start)
        except (ConfigError, StudyMismatchError):
            lock.close()
            raise
        except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
            lock.close()
            raise ConfigError([Problem("optimizer.storage", f"cannot open {opt.storage!r}: {type(e).__name__}: "
                                                            f"{str(e).splitlines()[0] if str(e) else ''}")]) from None
        folder.path.mkdir(parents=True, exist_ok=True)
        shared = SharedRun(lock, Heartbeat(storage), int(study.user_attrs.get(LIMIT_ATTR, opt.trials)), opt.retries,
                           worker_info(self.options.worker_kind or self.host.name, self.host.device))
        return DirectRecorder(study), folder, shared

    def _create_or_join(self, name: str, planner: Planner, model_config: str, jobs, hashes: dict[str, str],
                        start: list[tuple[dict[str, Any], str]]):
        """The shared study's storage and the study (under its lock): a new study gets the run's
        fingerprint, baselines, trial limit and config; a joined one is checked against them."""
        cfg, opt = self.config, self.config.optimizer
        distributions = planner.space.distributions()
        seed = None if opt.seed is None else (opt.seed + zlib.crc32(worker_id().encode())) % 2**31
        sampler = make_sampler(opt.sampler, opt.sampler_options, seed, distributions,  # its own points
                               budget=opt.trials)  # the study's limit, if this worker creates it
        storage = shared_storage(opt.storage, heartbeat_s=opt.heartbeat_s)
        study, created = join_study(name=name, storage=storage, sampler=sampler,
                                    fingerprint=self._fingerprint(planner, model_config, hashes, jobs))
        self._annotate(study, planner, hashes, start, baselines=created)
        if created:  # the study's trial limit: its creator's optimizer.trials, for every worker
            study.set_user_attr(LIMIT_ATTR, opt.trials)
            study.set_user_attr(CONFIG_ATTR, stored_config(cfg))
        return storage, study

    def _annotate(self, study, planner: Planner, hashes: dict[str, str], start: list[tuple[dict[str, Any], str]],
                  baselines: bool | None = None) -> None:
        """The study's attributes; a new study's first trials: the baselines, then the warm-start
        parameter sets (``start``: :func:`.warm.start_points`)."""
        cfg, opt = self.config, self.config.optimizer
        if self.options.resume and opt.seed is not None:
            # the same seed again would replay the first session's parameter sets
            study.sampler = make_sampler(opt.sampler, opt.sampler_options, opt.seed + len(study.trials),
                                         planner.space.distributions(),
                                         budget=len(study.trials) + (self.options.trials or opt.trials))
        study.set_user_attr("sd_optim.models", {m.name: {"path": str(cfg.resolve_path(m.path)),
                                                         "hash": hashes[m.name]} for m in cfg.models})
        study.set_user_attr("sd_optim.mode", cfg.mode)
        study.set_user_attr("sd_optim.method", planner.label)
        study.set_user_attr("sd_optim.scorers", [[s.name, s.weight] for s in cfg.scorers])
        if baselines is None:
            baselines = not self.options.resume and not self.options.fork
        if baselines:
            for kind in opt.baseline:
                point = planner.space.default_point() if kind == "defaults" else planner.space.midpoint()
                study.enqueue_trial(point, user_attrs={"sd_optim.baseline": kind})
            for point, source in start:
                study.enqueue_trial(point, user_attrs={START_ATTR: source})

    def _check_payloads(self) -> None:
        """Sampler and scheduler names against the host's own lists, before anything runs."""
        problems = []
        for i, p in enumerate(self.config.payloads):
            for name, message in self.host.sampler_problems(p.sampler, p.scheduler).items():
                problems.append(Problem(f"payloads[{i}].{name}", message))
        if problems:
            raise ConfigError(problems)

    def _jobs(self) -> list[tuple[Payload, GenerationJob]]:
        cfg = self.config
        folder = cfg.resolve_path(cfg.wildcards_dir) if cfg.wildcards_dir else None
        jobs = []
        for i, p in enumerate(cfg.payloads):
            try:
                prompt = expand(p.prompt, folder, p.seed)
                negative = expand(p.negative_prompt, folder, p.seed + 1)
            except WildcardError as e:
                raise ConfigError([Problem(f"payloads[{i}]", str(e))]) from None
            jobs.append((p, GenerationJob(
                prompt=prompt,
                negative_prompt=negative,
                seed=p.seed, steps=p.steps, cfg_scale=p.cfg_scale, sampler=p.sampler,
                scheduler=p.scheduler, width=p.width, height=p.height, n_images=p.batch_size,
            )))
        return jobs

    # --- the loop ----------------------------------------------------------------------------

    def events(self) -> Iterator[ev.Event]:
        coarse = yield from self._coarse_stage()
        if coarse is not None and (coarse.best_trial is None or coarse.reason not in ("completed", "early stopping")):
            yield self._emit_quietly(coarse)  # stopped or failed there: the run ends with that stage
            return
        try:
            run = self._prepare()
        except Exception as e:
            yield self._emit(ev.RunFailed(str(e)))
            raise
        writer = run.writer = self._start_writer(run)
        self.listeners.append(writer)
        self.state = run
        progress = run.progress
        self.control.trial_limit = progress.limit
        run.engine = self.engine or MergeEngine(device=self.host.device)
        run.engine.merge_dtype = MERGE_DTYPES[run.config.merge_precision]  # what every merge of the run computes in
        after: dict[str, Any] = {}
        try:
            yield self._emit(ev.RunStarted(run.study.study_name, str(run.folder.path), progress.limit,
                                           [p.name for p in run.planner.space.params], run.model_config,
                                           len(run.study.trials)))
            self.host.release_kept()  # trials start from the host model, not an earlier kept merge
            with self.host.open_slot() as slot:
                run.slot = slot
                try:
                    yield from self._loop(run)
                    yield from self._confirm(run)
                    after = self._after_run(run)
                finally:
                    self.control.restoring = True  # the slot's exit puts the original weights back
                    run.slot = None
        except GeneratorExit:  # the consumer went away: the slot context has restored the model
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the slot has restored the model
            progress.reason = self.control.stop_reason if self.control.stopping else "interrupted (Ctrl-C)"
        except BaseException as e:
            self._emit_quietly(ev.RunFailed(f"{type(e).__name__}: {e}"))
            raise
        finally:
            self.control.restoring = False
            self.listeners.remove(writer)
            writer.close()
            run.scoring.close()
            if run.feed is not None:
                run.feed.close()
            if run.shared is not None:
                run.shared.close()
            self._close_study(run)
            run.release()
        yield self._emit_quietly(self._finished(run, {**after, **progress.outcomes.fields()}))

    def _coarse_stage(self):
        """``optimizer.coarse_trials`` in a new study: that many trials of one value per component
        in a study of their own (:func:`.warm.coarse_config`, run by a runner sharing this one's
        controls, its events passed on; the tab sees its study meanwhile), then this runner's
        config becomes the fine stage's (:func:`.warm.fine_config`). Its RunFinished, or None when
        there is no coarse stage."""
        cfg, opt = self.config, self.config.optimizer
        if not opt.coarse_trials or self.options.resume or self.options.fork or self.options.join:
            return None
        try:
            fine, coarse_name, total = self._coarse_names()
        except Exception as e:
            yield self._emit(ev.RunFailed(str(e)))
            raise
        inner = Runner(coarse_config(cfg, coarse_name), self.host, RunOptions(save_images=self.options.save_images),
                       self.control, self.engine)
        finished = None
        with contextlib.closing(inner.events()) as events:  # closed with this one (the slot restored)
            for event in events:
                self.state = inner.state  # the tab shows the coarse study while it runs
                if isinstance(event, ev.RunFinished):
                    finished = event
                    event = ev.CoarseFinished(event.study, event.run_dir, event.trials, event.best_trial,
                                              event.best_value, event.reason)
                yield self._emit(event)
        self.state, self.coarse_study = None, coarse_name
        self.config = fine_config(cfg, fine, coarse_name, total - opt.coarse_trials)
        self.options = dataclasses.replace(self.options, trials=None)
        return finished

    def _coarse_names(self) -> tuple[str, str, int]:
        """The fine and the coarse study's names (both new) and the run's trials, before either runs."""
        cfg, opt = self.config, self.config.optimizer
        total = self.options.trials or opt.trials
        if opt.coarse_trials >= total:
            raise ConfigError([Problem("optimizer.coarse_trials", f"must be fewer than the run's trials ({total})",
                                       opt.coarse_trials)])
        out = cfg.resolve_path(cfg.output_dir)
        label = make_planner(cfg, self.host.model_config()).label
        fine = new_study_folder(out, study_name(opt.study, label, [m.name for m in cfg.models]),
                                explicit=bool(opt.study), storage=opt.storage)
        names = [fine, new_study_folder(out, fine + COARSE_SUFFIX, explicit=True, storage=opt.storage)]
        for name in names:
            storage = storage_url(opt.storage, out / name)
            if (opt.storage or (out / name / "study.db").exists()) and \
                    name in [s.study_name for s in existing_studies(storage)]:
                raise ConfigError([Problem("optimizer.study", f"a study named {name!r} already exists in "
                                                              f"{storage}; coarse trials run in new studies only: "
                                                              "choose another name", opt.study or name)])
        return fine, names[1], total

    def _close_study(self, run: RunState) -> None:
        """Every trial into the database; when that fails the run says so (its folder has what a
        resume needs to complete the study)."""
        problem = run.recorder.close()
        if problem and problem not in (run.progress.reason or ""):
            run.progress.reason = f"stopped: {problem}" if run.progress.reason in (None, "completed") \
                else f"{run.progress.reason}; {problem}"

    def _start_writer(self, run: RunState) -> ArtifactWriter:
        """The run folder's writer; on a resumed study, first the rows ``trials.jsonl`` lacks (trials
        an ended process left running, now failed; results a full disk could not record)."""
        study = run.study
        writer = ArtifactWriter(run.folder, self.config, save_images=self.options.save_images)
        try:
            writer.start()
            if self.options.resume:
                writer.add_missing_rows(study)
        except OSError as e:
            run.recorder.close()
            if not self.options.resume:  # a study without its run folder would block the name
                discard_study(study.study_name, storage_url(self.config.optimizer.storage, run.folder.path))
            raise ConfigError([Problem("output_dir", f"cannot write the run folder ({type(e).__name__}: {e})",
                                       str(run.folder.path))]) from None
        return writer

    def _loop(self, run: RunState):
        """Trials until the limit, a stop, early stopping, or a failure to record them; the reason
        the loop ended goes to ``run.progress.reason``."""
        progress = run.progress
        if self.config.optimizer.score_inputs and not self.options.resume:
            try:
                yield from self._score_inputs(run)
            except (RunStopped, ScoringStopped):
                pass  # the loop below sees the stop and ends the run as "stopped"
            except RecordingFailed as e:
                progress.reason = f"stopped: {e}"
                return
        while progress.reason is None and progress.ran < (self.control.trial_limit or progress.limit):
            if self.control.paused:
                if run.feed is not None:  # the trial claimed ahead is not held while paused
                    run.feed.hand_back()
                yield self._emit(ev.RunPaused(progress.ran))
                self.control.wait_if_paused(self.host.interrupted)
                yield self._emit(ev.RunResumed())
            if self.should_stop():
                progress.reason = self.control.stop_reason
                break
            progress.ran += 1
            try:
                finished = yield from self._trial(run)
                if finished is None:  # a shared study with all its trials (or stopped waiting for them)
                    progress.ran -= 1
                    progress.reason = self.control.stop_reason if self.should_stop() else "completed"
                    break
                yield from self._judge(run, finished)
            except RecordingFailed as e:
                progress.ran -= isinstance(e, TrialNotStarted)
                progress.reason = f"stopped: {e}"
            if progress.reason is None and run.recorder.problem():  # the run folder has the trials
                progress.reason = f"stopped: {run.recorder.problem()}"
        if run.feed is not None:
            self._settle_feed(run)

    @staticmethod
    def _settle_feed(run: RunState) -> None:
        """A shared study's results all written before the run's best is read; the trial claimed
        ahead handed back."""
        try:
            run.feed.settle()
        except RecordingFailed as e:
            reason = run.progress.reason
            run.progress.reason = f"stopped: {e}" if reason in (None, "completed") else f"{reason}; {e}"

    def _judge(self, run: RunState, finished: ev.TrialFinished):
        """A finished trial against the best so far: a new best, early stopping, or a failure that
        ends the run (a stop, or ``on_trial_error: stop``)."""
        progress = run.progress
        progress.outcomes.add(finished, self.control.stopping)
        es = self.config.optimizer.early_stopping
        if finished.state == "PRUNED":  # no gain (a shared study's patience counts completed trials only)
            progress.since_best += run.shared is None
            if es.patience and progress.since_best >= es.patience:
                progress.reason = "early stopping"
            return
        if finished.state == "FAIL":
            if self.control.stopping:
                progress.reason = self.control.stop_reason
            elif self.config.optimizer.on_trial_error == "stop":
                progress.reason = "trial failed"
            return
        best = progress.best
        progress.since_best = 0 if best is None or finished.value > best + es.min_improvement \
            else progress.since_best + 1
        if run.shared is not None and es.patience:  # the study's trials decide, every worker's
            progress.since_best = since_best(run.study, es.min_improvement, (finished.number, finished.value))
        if best is None or finished.value > best:
            progress.best = finished.value
            yield self._emit(ev.NewBest(finished.number, finished.value, finished.params,
                                        run.best_text(finished.number, finished.params)))
        if es.patience and progress.since_best >= es.patience:
            progress.reason = "early stopping"

    def _confirm(self, run: RunState):
        """``optimizer.confirm_top``: the study's best trials rendered again on fresh seeds (each
        prompt set's next ``batch_size`` seeds), best first; the winner is the one whose mean of
        the two values is highest. It goes into the study (``CONFIRM_ATTR``) and best.mecha.
        Skipped when the run was stopped or failed, and for a worker of a shared study."""
        top = self.config.optimizer.confirm_top
        if not top or run.shared is not None or run.progress.reason not in (None, "completed", "early stopping"):
            return
        done = sorted(run.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: -t.value)[:top]
        if not done:
            return
        yield self._emit(ev.ConfirmationStarted([t.number for t in done]))
        fresh_jobs = seed_round(run.jobs, 1)
        results: dict[str, dict[str, float]] = {}
        try:
            for t in done:
                fresh, per_payload = yield from self._fresh_value(run, t, fresh_jobs)
                results[str(t.number)] = {"value": t.value, "fresh_value": fresh, "combined": (t.value + fresh) / 2}
                yield self._emit(ev.TrialConfirmed(t.number, t.value, fresh, results[str(t.number)]["combined"],
                                                   per_payload))
        except (RunStopped, ScoringStopped):
            run.progress.reason = f"{self.control.stop_reason} (while confirming the best trials)"
            yield self._emit(ev.ConfirmationFinished(None, None, done[0].number, "stopped"))
            return
        except Exception as e:  # noqa: BLE001 - the trials are kept; only the confirmation is lost
            log.warning("the confirmation stage failed: %s\n%s", e, traceback.format_exc())
            yield self._emit_quietly(ev.ConfirmationFinished(None, None, done[0].number,
                                                             f"failed: {type(e).__name__}: {e}"))
            return
        winner = max(results, key=lambda n: results[n]["combined"])
        run.study.set_user_attr(CONFIRM_ATTR, {"winner": int(winner), "trials": results})
        run.confirmed = (int(winner), results[winner]["combined"])
        params = next(t.params for t in done if t.number == int(winner))
        run.folder.best_recipe.write_text(run.planner.recipe_text(params), encoding="utf-8")
        yield self._emit(ev.ConfirmationFinished(int(winner), results[winner]["combined"], done[0].number))

    def _fresh_value(self, run: RunState, trial: optuna.trial.FrozenTrial, jobs):
        """Trial ``trial`` merged again and its value on the prompt sets ``jobs`` (fresh seeds)."""
        params = dict(trial.params)
        self._merge(run, run.planner.recipe(params))
        timings = {"generate": 0.0, "score": 0.0}
        per_scorer = yield from self._generate_and_score(run, trial.number, params, timings, jobs=jobs,
                                                         stage="confirm")
        return self._combine(per_scorer, run.scorers)

    def _after_run(self, run: RunState) -> dict[str, Any]:
        """keep-best / save-best, inside the open slot (the WebUI's queue is still ours)."""
        after, study, planner = self.config.after_run, run.study, run.planner
        if not (after.keep_best or after.save_best):
            return {}
        try:
            bt = chosen_trial(study)
        except ValueError:
            return {"after_run_note": "no completed trial: nothing kept or saved"}
        changed = self.host.model_changed()
        if changed:
            return {"after_run_note": f"nothing kept or saved: {changed}"}
        out: dict[str, Any] = {}
        recipe = planner.recipe(bt.params)
        if after.save_best:
            try:
                out["saved_checkpoint"] = str(self.save_checkpoint(run, bt, recipe, after.save_name))
            except Exception as e:  # noqa: BLE001 - the run's results stay; say why nothing was saved
                log.warning("save-best failed: %s\n%s", e, traceback.format_exc())
                out["after_run_note"] = f"save-best failed: {type(e).__name__}: {e}"
        if after.keep_best:
            assert run.engine is not None and run.slot is not None  # the loop's: the slot is open
            run.engine.apply(recipe, run.slot, run.model_config)
            run.slot.commit()
            run.slot.keep()
            self.host.mark_kept(KeptMerge(study.study_name, bt.number, float(trial_value(bt)),
                                          planner.recipe_text(bt.params), str(run.folder.best_recipe)))
            out["kept_trial"] = bt.number
        return out

    def save_checkpoint(self, run: RunState, bt: optuna.trial.FrozenTrial, recipe, name: str = "") -> Path:
        """Trial ``bt`` merged to ``<name or study-trialN>.safetensors`` in the host's checkpoint
        folder (the run folder when it has none); never overwrites a file."""
        import sd_mecha
        import torch

        target = self.host.checkpoint_dir() or run.folder.path
        name = name[:-len(".safetensors")] if name.lower().endswith(".safetensors") else name
        stem = safe_component("checkpoint name", name) if name else f"{run.study.study_name}-trial{bt.number}"
        target.mkdir(parents=True, exist_ok=True)
        path, n = target / f"{stem}.safetensors", 1
        while os.path.lexists(path):  # never overwrite (nor write through a dangling link)
            n += 1
            path = target / f"{stem}-{n}.safetensors"
        inside(target, path, "checkpoint name")
        with new_file(path) as tmp:
            # sd-mecha writes the recipe into the file's metadata ("mecha_recipe")
            sd_mecha.merge(recipe, output=tmp, output_dtype=torch.float16,
                           merge_dtype=MERGE_DTYPES[run.config.merge_precision],
                           check_finite_output=False, omit_non_finite_inputs=False)
        self.host.refresh_checkpoints()
        return path

    def _finished(self, run: RunState, after: dict[str, Any]) -> ev.RunFinished:
        study, folder = run.study, run.folder
        try:
            bt = best_trial(study)
        except ValueError:
            bt = None
        if bt is not None and not folder.best_recipe.exists():
            try:
                folder.best_recipe.write_text(run.planner.recipe_text(bt.params), encoding="utf-8")
            except OSError as e:  # the summary still reaches the user; the study has the trial
                log.warning("could not write %s: %s", folder.best_recipe, e)
        return ev.RunFinished(
            study=study.study_name, run_dir=str(folder.path), reason=run.progress.reason or "completed",
            trials=run.progress.ran,
            best_trial=bt.number if bt else None, best_value=trial_value(bt) if bt else None,
            best_params=dict(bt.params) if bt else {},
            best_recipe=str(folder.best_recipe) if bt else "",
            confirmed_trial=run.confirmed[0] if run.confirmed else None,
            confirmed_value=run.confirmed[1] if run.confirmed else None,
            sampler_note=run.sampler_note,
            coarse_study=self.coarse_study,
            pareto=[{"trial": t.number, "objectives": dict(zip(objective_names(study), t.values)),
                     "value": trial_value(t)} for t in pareto_front(study)],
            **after,
        )

    def _trial(self, run: RunState):
        """One trial, its TrialFinished event; None when a shared study has all its trials."""
        start = time.perf_counter()
        try:
            trial = self._ask(run)
            if trial is None:
                return None
            suggest = time.perf_counter() - start
            if run.shared is None:  # a shared study's trials have heartbeats instead
                claim_trial(trial)
            run.recorder.started(trial)
        except RecordingFailed as e:  # a shared study's result written behind, refused
            raise TrialNotStarted(str(e)) from e
        except Exception as e:  # the study cannot be written: nothing could be kept
            raise TrialNotStarted(f"could not start a trial: {type(e).__name__}: {e}") from e
        try:
            if self._hand_over_if_slow(run, suggest):
                yield self._emit(ev.SamplerHandedOver(trial.number + 1, run.sampler_note))
            return (yield from self._run_trial(run, trial, start, suggest))
        finally:
            release_trial(run.study.study_name, trial.number)

    def _hand_over_if_slow(self, run: RunState, suggest: float) -> bool:
        """``optimizer.max_suggest_s``: True when this suggestion made the run hand its sampler
        over to TPE (a worker of a shared study claims ahead, off the trial's time: not watched)."""
        opt = self.config.optimizer
        if run.feed is not None or run.sampler_note:
            return False
        run.sampler_note = hand_over_if_slow(run.study, run.slow_suggests, suggest, opt.max_suggest_s, opt.sampler,
                                             opt.seed, run.planner.space.distributions())
        return bool(run.sampler_note)

    def _ask(self, run: RunState) -> optuna.Trial | None:
        """The next trial: of the run's own study, or of a shared one (None once it has its limit
        of trials), claimed ahead while the trial before ran."""
        if run.feed is None:
            return run.study.ask(run.planner.space.distributions())
        more = run.progress.ran < (self.control.trial_limit or run.progress.limit)
        return run.feed.take(more, self.should_stop)

    def _run_trial(self, run: RunState, trial: optuna.Trial, start: float, suggest: float):
        """One trial; its timings: the sampler's suggestion, merge, generate and score, and
        ``other``, the rest of the trial from asking the study for it to telling it the value (the
        study's storage, the run folder's writes, the events)."""
        params = dict(trial.params)
        yield self._emit(ev.TrialStarted(trial.number, params))
        timings = {"merge": 0.0, "generate": 0.0, "score": 0.0, "suggest": suggest}
        reported: dict[int, float] = {}  # with a pruner, the running score after each prompt set
        try:
            t0 = time.perf_counter()
            recipe = run.planner.recipe(params)
            run.last_recipe = (trial.number, recipe)
            stats = self._merge(run, recipe)
            timings["merge"] = time.perf_counter() - t0
            yield self._emit(ev.TrialMerged(trial.number, stats.seconds, stats.keys_written))
            per_scorer = yield from self._generate_and_score(run, trial.number, params, timings, (trial, reported))
            value, per_payload = self._combine(per_scorer, run.scorers)
            objectives = self._objectives(self._normalized(per_scorer, run.scorers)) \
                if self.config.scoring.objectives else {}
        except TrialPruned as p:
            finished = self._prune(run, trial, params, timings, p)
            timings["other"] = max(0.0, time.perf_counter() - start - sum(timings.values()))
            yield self._emit(finished)
            return finished
        except (RunStopped, ScoringStopped):
            finished = self._emit(self._fail(run, trial, params, timings, self.control.stop_reason))
            yield finished
            return finished
        except RecordingFailed as e:
            yield self._emit_quietly(self._fail(run, trial, params, timings, str(e)))
            raise
        except Exception as e:  # the per-trial boundary: fail the trial, go on
            log.warning("trial %d failed: %s\n%s", trial.number, e, traceback.format_exc())
            finished = self._fail(run, trial, params, timings, f"{type(e).__name__}: {e}")
            if _disk_full(e):  # every later trial would fail the same way
                yield self._emit_quietly(finished)
                raise RecordingFailed(finished.reason) from e
            yield self._emit(finished)
            return finished
        except BaseException as e:  # the run itself ends (consumer gone, Ctrl-C): no trial stays RUNNING
            reason = "stopped" if isinstance(e, GeneratorExit) else \
                self.control.stop_reason if self.control.stopping else f"interrupted ({type(e).__name__})"
            with contextlib.suppress(RecordingFailed):
                self._emit_quietly(self._fail(run, trial, params, timings, reason))
            raise
        told = list(objectives.values()) if objectives else value
        self._complete(run, trial, params, told, timings, per_scorer, per_payload)
        timings["other"] = max(0.0, time.perf_counter() - start - sum(timings.values()))
        finished = ev.TrialFinished(trial.number, "COMPLETE", value, params, per_payload, per_scorer, timings,
                                    intermediate=reported, objectives=objectives)
        yield self._emit(finished)
        return finished

    def _complete(self, run: RunState, trial, params, value, timings, per_scorer, per_payload) -> None:
        """Tell the study the trial's value (a list: each objective's), with what the run folder
        keeps beside it."""
        try:
            if run.feed is not None:  # written behind, while the next trial runs
                run.feed.tell(trial, trial_attrs(timings, per_payload, per_scorer), value)
                return
            for k, v in trial_attrs(timings, per_payload, per_scorer).items():
                trial.set_user_attr(k, v)
            run.study.tell(trial, value)
            run.recorder.finished(trial.number)
        except Exception as e:  # the study cannot be written: record what we can, stop
            reason = f"could not record the result: {type(e).__name__}: {e}"
            log.warning("trial %d: %s", trial.number, reason)
            self._emit_quietly(self._fail(run, trial, params, timings, reason))
            raise RecordingFailed(reason) from e

    def _prune(self, run: RunState, trial, params, timings, pruned: TrialPruned) -> ev.TrialFinished:
        """Tell the study the trial was pruned: its value is its last reported score (of the
        prompt sets it finished), as Optuna records a pruned trial."""
        _, per_payload = self._combine(pruned.per_scorer, run.scorers)
        attrs = trial_attrs(timings, per_payload, pruned.per_scorer, pruned.reason, pruned=True)
        try:
            self._images_saved(run)  # the sets it finished are on disk before it is told
        except RecordingFailed as e:
            self._emit_quietly(self._fail(run, trial, params, timings, str(e)))
            raise
        try:
            if run.feed is not None:
                run.feed.tell(trial, attrs, state=optuna.trial.TrialState.PRUNED)
            else:
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                run.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                run.recorder.finished(trial.number)
        except Exception as e:  # the database or its disk refused
            reason = f"could not record pruned trial {trial.number}: {type(e).__name__}: {e}"
            self._emit_quietly(self._fail(run, trial, params, timings, reason))
            raise RecordingFailed(reason) from e
        value = pruned.intermediate[max(pruned.intermediate)]
        return ev.TrialFinished(trial.number, "PRUNED", value, params, per_payload, pruned.per_scorer,
                                timings, pruned.reason, dict(pruned.intermediate))

    def _fail(self, run: RunState, trial, params, timings, reason: str) -> ev.TrialFinished:
        """Tell the study the trial failed; :class:`RecordingFailed` when even that cannot be
        written (a resume then marks it failed)."""
        try:
            if run.feed is not None:  # written at once (with the results still being written)
                run.feed.tell(trial, {"fail_reason": reason}, state=optuna.trial.TrialState.FAIL)
                run.feed.flush()
            else:
                trial.set_user_attr("fail_reason", reason)
                run.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                run.recorder.finished(trial.number)
        except Exception as e:  # the database or its disk refused
            raise RecordingFailed(f"could not record trial {trial.number} as failed ({reason}): "
                                  f"{type(e).__name__}: {e}") from e
        return ev.TrialFinished(trial.number, "FAIL", None, params, timings=timings, reason=reason)

    def _merge(self, run: RunState, recipe):
        assert run.engine is not None and run.slot is not None  # set while the loop runs
        return run.engine.apply(recipe, run.slot, run.model_config)

    def _combine(self, per_scorer: dict[str, dict[str, list[float]]], scorers: list[Scorer]
                 ) -> tuple[float, dict[str, float]]:
        """The trial's value from its raw scores (mapped to 0–1 first with ``scoring.normalize``;
        the raw ones are what the run folder keeps) and each prompt set's. With several objectives
        the value is their mean (:func:`balanced`)."""
        cfg = self.config
        per_scorer = self._normalized(per_scorer, scorers)
        value, per_payload = combine_trial(per_scorer, {s.name: s.weight for s in cfg.scorers},
                                           {p.name: p.weight for p in cfg.payloads},
                                           cfg.scoring.scorer_mean, cfg.scoring.payload_mean)
        if cfg.scoring.objectives:
            value = balanced(self._objectives(per_scorer))
        return value, per_payload

    def _normalized(self, per_scorer: dict[str, dict[str, list[float]]], scorers: list[Scorer]):
        if not self.config.scoring.normalize:
            return per_scorer
        by_name = {s.name: s for s in scorers}
        return {payload: {name: [by_name[name].normalize(v) for v in values] for name, values in by_scorer.items()}
                for payload, by_scorer in per_scorer.items()}

    def _objectives(self, normalized: dict[str, dict[str, list[float]]]) -> dict[str, float]:
        """Each objective's value (``scoring.objectives``) from normalised scores; {} with one."""
        cfg = self.config
        if not cfg.scoring.objectives:
            return {}
        return objective_values(normalized, cfg.scoring.objectives, {s.name: s.weight for s in cfg.scorers},
                                {p.name: p.weight for p in cfg.payloads},
                                cfg.scoring.scorer_mean, cfg.scoring.payload_mean)

    def _generate_and_score(self, run: RunState, number: int, params: dict[str, Any],
                            timings: dict[str, float],
                            pruned: tuple[optuna.Trial, dict[int, float]] | None = None,
                            jobs: list[tuple[Payload, GenerationJob]] | None = None, stage: str = ""):
        """Each prompt set generated, then scored on the scoring thread while the next set
        generates; its images' events as soon as its scores are in. With a pruner, ``pruned`` is
        the trial and the dict its running score goes into after each set (:class:`TrialPruned`
        ends it early). ``jobs``: other prompt sets than the run's (fresh seeds), ``stage`` on their
        images' events. ``score`` is the time the trial waited for scores (after its last image,
        mostly the last set's scoring)."""
        per_payload: dict[str, dict[str, list[float]]] = {}
        queue = run.scoring
        ctx = ScoreContext(device=self.host.device, should_stop=queue.begin(self.should_stop),
                           ratings=self.control.ratings, trial=number)
        cache = run.scorers[0].backbones if run.scorers else None
        if cache is not None:
            cache.restore(self.host.device)  # back from the CPU, where the last trial left them
        run.recorder.generating()
        try:
            for payload, job in jobs or run.jobs:
                t0 = time.perf_counter()
                images = []
                job = dataclasses.replace(job, infotext_params=trial_infotext(run.study, number, params))
                with contextlib.closing(self.host.generate(job, self.should_stop)) as generated:
                    for img in generated:  # the events of sets scored meanwhile between images
                        images.append(img)
                        if self.should_stop():
                            break
                        timings["generate"] += time.perf_counter() - t0
                        yield from self._scored(queue.ready(), number, params, per_payload, stage)
                        t0 = time.perf_counter()
                timings["generate"] += time.perf_counter() - t0
                if self.should_stop() or len(images) < job.n_images:
                    raise RunStopped()
                queue.submit((payload, images), functools.partial(self._score_set, run, payload, images, ctx))
                if run.pruning and pruned is not None and len(per_payload) + 1 < len(run.jobs):
                    yield from self._scored(queue.drain(), number, params, per_payload, stage)  # judged before the next set
                    self._check_pruned(run, pruned, per_payload)
            yield from self._scored(queue.drain(), number, params, per_payload, stage)
            self._check_pruned(run, pruned, per_payload)
        except BaseException:
            queue.abandon()
            raise
        finally:
            timings["score"] += queue.waited
        self._images_saved(run)
        if cache is not None:
            self._scorers_within_budget(cache)
        return per_payload

    def _check_pruned(self, run: RunState, pruned: tuple[optuna.Trial, dict[int, float]] | None,
                      per_payload: dict) -> None:
        """With a pruner: the trial's score over the prompt sets scored so far reported once per
        set (step = sets scored - 1, into ``reported`` too), and :class:`TrialPruned` when the
        pruner stops it while sets remain to generate. Each set is scored before the next one
        generates then, so that a pruned trial makes no image past its last set."""
        if pruned is None or not run.pruning or not per_payload or len(per_payload) - 1 in pruned[1]:
            return
        trial, reported = pruned
        step = len(per_payload) - 1
        value, _ = self._combine(per_payload, run.scorers)
        trial.report(value, step)
        reported[step] = value
        if step + 1 < len(run.jobs) and trial.should_prune():
            names = ", ".join(per_payload)
            raise TrialPruned(f"pruned after {step + 1} of {len(run.jobs)} prompt sets ({names}): "
                              f"score so far {value:.4f}, below the {self.config.optimizer.pruner} pruner's "
                              "bar for that step", dict(per_payload), dict(reported))

    @staticmethod
    def _score_set(run: RunState, payload: Payload, images: list, ctx: ScoreContext) -> dict[str, list[float]]:
        """One prompt set's scores by every scorer it asks for (on the scoring thread)."""
        batch = [ImageToScore(g.image, g.prompt, g.negative_prompt, g.seed, payload.name, i)
                 for i, g in enumerate(images)]
        chosen = [s for s in run.scorers if not payload.scorers or s.name in payload.scorers]
        return {s.name: [float(x) for x in s.score(batch, ctx)] for s in chosen}

    def _scored(self, results, number: int, params: dict[str, Any], per_payload: dict, stage: str = ""):
        """The events of the prompt sets whose scores are in."""
        for (payload, images), scores in results:
            per_payload[payload.name] = scores
            for i, g in enumerate(images):
                yield self._emit(ev.ImageScored(
                    number, payload.name, i, g.image, g.seed, g.prompt, g.negative_prompt,
                    g.infotext, {name: vals[i] for name, vals in scores.items()}, params, stage=stage))

    def _images_saved(self, run: RunState) -> None:
        """The trial's images are on disk before it is told: one that cannot be written (a full
        disk) fails the trial and stops the run, as any write of the run folder does."""
        try:
            if run.writer is not None:
                run.writer.saved()
        except Exception as e:
            raise RecordingFailed(f"could not record the run: {type(e).__name__}: {e}") from e

    def _scorers_within_budget(self, cache) -> None:
        """With ``scoring.vram_gb``, the scorers' models wait on the CPU until the next trial when
        they hold more of the scoring device's memory than that."""
        budget = self.config.scoring.vram_gb
        if budget > 0 and cache.device_bytes(self.host.device) > budget * 1e9:
            cache.offload()
            if self.host.device.type == "cuda":
                torch.cuda.empty_cache()

    def _score_inputs(self, run: RunState):
        """Each input model scored once as a reference row (not an Optuna trial). A row that fails
        says why and the run goes on: the references only put the trials' scores in context."""
        for m in self.config.models:
            try:
                self._merge(run, run.planner.model_recipe(m))
                per_scorer = yield from self._generate_and_score(run, -1, {"model": m.name},
                                                                {"generate": 0.0, "score": 0.0})
                value, per_payload = self._combine(per_scorer, run.scorers)
            except (RunStopped, ScoringStopped, RecordingFailed):
                raise
            except Exception as e:  # noqa: BLE001 - this row fails, the run goes on
                log.warning("scoring input model %s failed: %s\n%s", m.name, e, traceback.format_exc())
                yield self._emit(ev.ReferenceScored(m.name, None, {}, f"{type(e).__name__}: {e}"))
                continue
            yield self._emit(ev.ReferenceScored(m.name, value, per_payload))


def seed_round(jobs: list[tuple[Payload, GenerationJob]], r: int) -> list[tuple[Payload, GenerationJob]]:
    """The prompt sets on their ``r``-th round of seeds: 0, the trials' own; 1, the confirmation
    stage's (each set's next ``batch_size`` seeds); and so on."""
    return [(p, dataclasses.replace(job, seed=job.seed + r * job.n_images)) for p, job in jobs]


def _remove_new(db: Path | None, dirs: list[Path]) -> None:
    """Remove a study.db and folders this run created, when it was refused after creating them."""
    try:
        if db is not None:
            db.unlink(missing_ok=True)
        for d in dirs:  # the run folder first, then output_dir
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    except OSError as e:  # the refusal's own error matters more than the leftover
        log.warning("could not remove %s after a refused run: %s", db or dirs, e)


def unknown_scorer_problems(names: list[str]) -> list[str]:
    """``scorers[i].name`` problems for names no registered scorer has."""
    import difflib

    known = available_scorers()
    problems = []
    for i, name in enumerate(names):
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(Problem(f"scorers[{i}].name", f"unknown scorer{hint}; available: "
                                                          f"{', '.join(known) or 'none'}", name))
    return problems


def trial_infotext(study: optuna.Study | None, number: int, params: dict[str, Any]) -> dict[str, str]:
    """The infotext fields of a trial's images: which study and trial, and its parameters."""
    name = study.study_name if study is not None else ""
    if number < 0:  # a reference row: one of the input models as it is
        return {"sd-optim": f"{name} input {params.get('model', '')}".strip()}
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return {"sd-optim": f"{name} trial {number}".strip(), **({"sd-optim params": values} if values else {})}


def _shared_study_name(storage: str, study: str) -> str:
    """The name of the shared study a worker joins; both the database and the name are needed."""
    problems = []
    if not storage:
        problems.append(Problem("optimizer.storage", "a shared study needs a database URL that every worker "
                                                     "reaches (e.g. postgresql://user:password@host/db)"))
    if not study:
        problems.append(Problem("optimizer.study", "name the shared study every worker joins"))
    if problems:
        raise ConfigError(problems)
    return check_study_name("optimizer.study", study)


def _payload_fp(p: Payload, job: GenerationJob) -> list[Any]:
    return [p.name, job.prompt, job.negative_prompt, p.seed, p.steps, p.cfg_scale, p.sampler,
            p.scheduler, p.width, p.height, p.batch_size, p.weight, sorted(p.scorers)]


def _disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _best(study: optuna.Study) -> float | None:
    try:
        return trial_value(best_trial(study))
    except ValueError:
        return None


def run_to_end(runner: Runner, on_event: Callable[[ev.Event], None] | None = None) -> ev.RunFinished:
    """Drain the runner and return its final event."""
    final = None
    for event in runner.events():
        if on_event:
            on_event(event)
        final = event
    if not isinstance(final, ev.RunFinished):
        raise RuntimeError("run ended without finishing")  # noqa: TRY004 - a broken invariant, not a bad argument
    return final
