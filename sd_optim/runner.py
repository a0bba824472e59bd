"""The optimizer loop, written once: ask -> recipe -> merge into the slot -> generate -> score -> tell.

:meth:`Runner.events` is a generator of typed events (:mod:`sd_optim.events`). A trial that
raises is told to Optuna as FAIL with its reason; a stop request ends the run at the next image
boundary and the trial in flight is recorded as failed ("stopped"), never scored on a partial
set of images; the host's slot restores the original weights on every exit path.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from . import events as ev
from .artifacts import ArtifactWriter, RunFolder
from .config import Payload, RunConfig
from .errors import ConfigError
from .hosts.base import GenerationJob, Host, KeptMerge
from .inputs import file_hash
from .merging import MergeEngine
from .planning import Planner, make_planner
from .scoring import ImageToScore, ScoreContext, ScoringStopped, build_scorers, combine_trial
from .study import make_sampler, open_study, storage_url, study_name
from .wildcards import WildcardError, expand

log = logging.getLogger("sd_optim")

# Runner.history keeps this many of the latest events: a few hundred trials' worth, so a long run
# holds a bounded amount whatever its length (trials.jsonl and the study keep every trial).
HISTORY_KEPT = 2000


class RunStopped(Exception):
    """The user asked the run to stop (Stop button, Interrupt, Ctrl-C)."""


class RunControl:
    """Thread-safe controls a UI or a signal handler can use while a run is live."""

    def __init__(self, trials: int | None = None, ratings=None):
        self.ratings = ratings  # a RatingDesk when a person can rate images (the tab), else None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self.trial_limit = trials
        self.stop_reason = "stopped"

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
    trials: int | None = None  # overrides optimizer.trials
    save_images: bool = True


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

    def _emit(self, event: ev.Event) -> ev.Event:
        self.tally.add(event)
        self.history.append(event)
        for listener in self.listeners:
            listener(event)
        if isinstance(event, ev.ImageScored):
            # a run of 1,000 trials x 4 images would otherwise hold every image it made
            self.history[-1] = dataclasses.replace(event, image=None)
        return event

    def should_stop(self) -> bool:
        if self.host.interrupted() and not self.control.stopping:
            self.control.stop(self.host.stop_reason())
        return self.control.stopping

    # --- set-up ------------------------------------------------------------------------------

    def _prepare(self):
        """Everything that can refuse the run, first; the study is opened (created) last, so a
        refused run leaves nothing behind."""
        cfg = self.config
        model_config = self.host.model_config()
        planner = make_planner(cfg, model_config)
        self._check_payloads()
        scorers = self._scorers()
        jobs = self._jobs()
        study, folder = self._open_study(planner, model_config, jobs)
        return model_config, planner, study, folder, scorers, jobs

    def _scorers(self):
        cfg = self.config
        scorers = build_scorers(cfg.absolute().scorers,
                                models_dir=cfg.resolve_path(cfg.models_dir) if cfg.models_dir else None,
                                device=self.host.device)
        problems = [f"scorers[{i}] ({s.name}): {p}" for i, s in enumerate(scorers) for p in s.check_ready()]
        if self.control.ratings is None:
            problems += [f"scorers[{i}] ({s.name}): rates images by hand, which needs the Optimize Merge tab "
                         "(the WebUI's, or python -m sd_optim app); the CLI and the API cannot ask a person"
                         for i, s in enumerate(scorers) if s.needs_person]
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
            "scoring": [cfg.scoring.scorer_mean, cfg.scoring.payload_mean],
        }

    def _open_study(self, planner: Planner, model_config: str, jobs):
        cfg, opt = self.config, self.config.optimizer
        distributions = planner.space.distributions()
        seed = opt.seed
        sampler = make_sampler(opt.sampler, opt.sampler_options, seed, distributions)
        hashes = {m.name: file_hash(cfg.resolve_path(m.path)) for m in cfg.models}
        name = self.options.resume or study_name(opt.study, planner.label, [m.name for m in cfg.models])
        out = cfg.resolve_path(cfg.output_dir)
        folder = RunFolder(out / name)
        if out.exists() and not out.is_dir():
            raise ConfigError([f"output_dir: not a folder, got {str(out)!r}"])
        if self.options.resume and not opt.storage and not (folder.path / "study.db").exists():
            known = sorted(d.name for d in out.glob("*") if (d / "study.db").exists()) if out.is_dir() else []
            raise ConfigError([(f"--resume: no study named {name!r} in {out} "
                               f"(studies: {', '.join(known) or 'none'})")])
        if not opt.storage:
            folder.path.mkdir(parents=True, exist_ok=True)
        storage = storage_url(opt.storage, folder.path)
        fork_storage = storage_url("", out / self.options.fork) \
            if self.options.fork and not opt.storage else ""
        study = open_study(name=name, storage=storage, sampler=sampler,
                           fingerprint=self._fingerprint(planner, model_config, hashes, jobs),
                           resume=bool(self.options.resume), fork_from=self.options.fork,
                           fork_storage=fork_storage, distributions=distributions)
        if self.options.resume and seed is not None:
            # the same seed again would replay the first session's parameter sets
            study.sampler = make_sampler(opt.sampler, opt.sampler_options, seed + len(study.trials),
                                         distributions)
        study.set_user_attr("sd_optim.models", {m.name: {"path": str(cfg.resolve_path(m.path)),
                                                         "hash": hashes[m.name]} for m in cfg.models})
        study.set_user_attr("sd_optim.mode", cfg.mode)
        study.set_user_attr("sd_optim.method", planner.label)
        study.set_user_attr("sd_optim.scorers", [[s.name, s.weight] for s in cfg.scorers])
        if not self.options.resume and not self.options.fork:
            for kind in opt.baseline:
                point = planner.space.default_point() if kind == "defaults" else planner.space.midpoint()
                study.enqueue_trial(point, user_attrs={"sd_optim.baseline": kind})
        return study, folder

    def _check_payloads(self) -> None:
        """Sampler and scheduler names against the host's own lists, before anything runs."""
        problems = []
        for i, p in enumerate(self.config.payloads):
            for name, message in self.host.sampler_problems(p.sampler, p.scheduler).items():
                problems.append(f"payloads[{i}].{name}: {message}")
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
                raise ConfigError([f"payloads[{i}]: {e}"]) from None
            jobs.append((p, GenerationJob(
                prompt=prompt,
                negative_prompt=negative,
                seed=p.seed, steps=p.steps, cfg_scale=p.cfg_scale, sampler=p.sampler,
                scheduler=p.scheduler, width=p.width, height=p.height, n_images=p.batch_size,
            )))
        return jobs

    # --- the loop ----------------------------------------------------------------------------

    def events(self) -> Iterator[ev.Event]:
        try:
            model_config, planner, study, folder, scorers, jobs = self._prepare()
        except Exception as e:
            yield self._emit(ev.RunFailed(str(e)))
            raise
        writer = ArtifactWriter(folder, self.config, save_images=self.options.save_images)
        writer.start()
        self.listeners.append(writer)
        self.study, self.folder, self.planner = study, folder, planner
        limit = self.options.trials or self.config.optimizer.trials
        self.control.trial_limit = limit
        engine = self.engine or MergeEngine(device=self.host.device)
        done_before = len(study.trials)
        yield self._emit(ev.RunStarted(study.study_name, str(folder.path), limit,
                                       [p.name for p in planner.space.params], model_config,
                                       done_before))
        ran, reason = 0, "completed"
        best = _best(study)
        since_best = 0
        try:
            self.host.release_kept()  # trials start from the host model, not an earlier kept merge
            with self.host.open_slot() as slot:
                if self.config.optimizer.score_inputs and not self.options.resume:
                    try:
                        yield from self._score_inputs(planner, engine, slot, model_config, scorers, jobs)
                    except (RunStopped, ScoringStopped):
                        pass  # the loop below sees the stop and ends the run as "stopped"
                while ran < (self.control.trial_limit or limit):
                    if self.control.paused:
                        yield self._emit(ev.RunPaused(ran))
                        self.control.wait_if_paused(self.host.interrupted)
                        yield self._emit(ev.RunResumed())
                    if self.should_stop():
                        reason = self.control.stop_reason
                        break
                    ran += 1
                    finished = yield from self._trial(study, planner, engine, slot, model_config,
                                                      scorers, jobs)
                    if finished.state == "FAIL":
                        if self.control.stopping:
                            reason = self.control.stop_reason
                            break
                        if self.config.optimizer.on_trial_error == "stop":
                            reason = "trial failed"
                            break
                        continue
                    es = self.config.optimizer.early_stopping
                    if best is None or finished.value > best + es.min_improvement:
                        since_best = 0
                    else:
                        since_best += 1
                    if best is None or finished.value > best:
                        best = finished.value
                        recipe = planner.recipe_text(finished.params)
                        yield self._emit(ev.NewBest(finished.number, finished.value,
                                                    finished.params, recipe))
                    if es.patience and since_best >= es.patience:
                        reason = "early stopping"
                        break
                after = self._after_run(study, planner, engine, slot, model_config, folder)
        except GeneratorExit:  # the consumer went away: the slot context has restored the model
            raise
        except BaseException as e:
            self._emit(ev.RunFailed(f"{type(e).__name__}: {e}"))
            raise
        finally:
            self.listeners.remove(writer)
        yield self._emit(self._finished(study, folder, planner, reason, ran, after))

    def _after_run(self, study, planner: Planner, engine, slot, model_config, folder) -> dict[str, Any]:
        """keep-best / save-best, inside the open slot (the WebUI's queue is still ours)."""
        after = self.config.after_run
        if not (after.keep_best or after.save_best):
            return {}
        try:
            bt = study.best_trial
        except ValueError:
            return {"after_run_note": "no completed trial: nothing kept or saved"}
        changed = self.host.model_changed()
        if changed:
            return {"after_run_note": f"nothing kept or saved: {changed}"}
        out: dict[str, Any] = {}
        recipe = planner.recipe(bt.params)
        if after.save_best:
            try:
                out["saved_checkpoint"] = str(self.save_checkpoint(study, bt, recipe, folder,
                                                                   self.config.after_run.save_name))
            except Exception as e:  # noqa: BLE001 - the run's results stay; say why nothing was saved
                log.warning("save-best failed: %s\n%s", e, traceback.format_exc())
                out["after_run_note"] = f"save-best failed: {type(e).__name__}: {e}"
        if after.keep_best:
            engine.apply(recipe, slot, model_config)
            slot.commit()
            slot.keep()
            self.host.mark_kept(KeptMerge(study.study_name, bt.number, float(bt.value),
                                          planner.recipe_text(bt.params), str(folder.best_recipe)))
            out["kept_trial"] = bt.number
        return out

    def save_checkpoint(self, study, bt, recipe, folder, name: str = "") -> Path:
        """Trial ``bt`` merged to ``<name or study-trialN>.safetensors`` in the host's checkpoint
        folder (the run folder when it has none); never overwrites a file."""
        import sd_mecha
        import torch

        target = self.host.checkpoint_dir() or folder.path
        stem = name or f"{study.study_name}-trial{bt.number}"
        target.mkdir(parents=True, exist_ok=True)
        path, n = target / f"{stem}.safetensors", 1
        while path.exists():  # never overwrite
            n += 1
            path = target / f"{stem}-{n}.safetensors"
        tmp = path.with_name(path.name + ".part")
        # sd-mecha writes the recipe into the file's metadata ("mecha_recipe")
        sd_mecha.merge(recipe, output=tmp, output_dtype=torch.float16,
                       check_finite_output=False, omit_non_finite_inputs=False)
        tmp.rename(path)
        self.host.refresh_checkpoints()
        return path

    def _finished(self, study, folder, planner, reason, ran, after=None) -> ev.RunFinished:
        try:
            bt = study.best_trial
        except ValueError:
            bt = None
        if bt is not None and not folder.best_recipe.exists():
            folder.best_recipe.write_text(planner.recipe_text(bt.params), encoding="utf-8")
        return ev.RunFinished(
            study=study.study_name, run_dir=str(folder.path), reason=reason, trials=ran,
            best_trial=bt.number if bt else None, best_value=bt.value if bt else None,
            best_params=dict(bt.params) if bt else {},
            best_recipe=str(folder.best_recipe) if bt else "",
            **(after or {}),
        )

    def _trial(self, study, planner: Planner, engine, slot, model_config, scorers, jobs):
        trial = study.ask(planner.space.distributions())
        params = dict(trial.params)
        yield self._emit(ev.TrialStarted(trial.number, params))
        timings = {"merge": 0.0, "generate": 0.0, "score": 0.0}
        try:
            t0 = time.perf_counter()
            recipe = planner.recipe(params)
            stats = engine.apply(recipe, slot, model_config)
            timings["merge"] = time.perf_counter() - t0
            yield self._emit(ev.TrialMerged(trial.number, stats.seconds, stats.keys_written))
            per_scorer = yield from self._generate_and_score(trial.number, params, scorers, jobs,
                                                            timings)
            value, per_payload = combine_trial(
                per_scorer, {s.name: s.weight for s in self.config.scorers},
                {p.name: p.weight for p in self.config.payloads},
                self.config.scoring.scorer_mean, self.config.scoring.payload_mean)
        except (RunStopped, ScoringStopped):
            finished = self._fail(study, trial, params, timings, self.control.stop_reason)
            yield self._emit(finished)
            return finished
        except Exception as e:  # noqa: BLE001 - the per-trial boundary: fail the trial, go on
            log.warning("trial %d failed: %s\n%s", trial.number, e, traceback.format_exc())
            finished = self._fail(study, trial, params, timings, f"{type(e).__name__}: {e}")
            yield self._emit(finished)
            return finished
        except BaseException as e:  # the run itself ends (consumer gone, Ctrl-C): no trial stays RUNNING
            reason = "stopped" if isinstance(e, GeneratorExit) else f"interrupted ({type(e).__name__})"
            self._emit(self._fail(study, trial, params, timings, reason))
            raise
        for k, v in timings.items():
            trial.set_user_attr(f"seconds_{k}", round(v, 4))
        trial.set_user_attr("per_payload", per_payload)
        if any("manual" in by_scorer for by_scorer in per_scorer.values()):  # the ratings, kept for later
            trial.set_user_attr("manual_ratings", {p: [round(v * 10, 2) for v in by_scorer["manual"]]
                                                   for p, by_scorer in per_scorer.items() if "manual" in by_scorer})
        study.tell(trial, value)
        finished = ev.TrialFinished(trial.number, "COMPLETE", value, params, per_payload,
                                    per_scorer, timings)
        yield self._emit(finished)
        return finished

    def _fail(self, study, trial, params, timings, reason: str) -> ev.TrialFinished:
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return ev.TrialFinished(trial.number, "FAIL", None, params, timings=timings, reason=reason)

    def _generate_and_score(self, number, params, scorers, jobs, timings):
        per_payload: dict[str, dict[str, list[float]]] = {}
        ctx = ScoreContext(device=self.host.device, should_stop=self.should_stop, ratings=self.control.ratings,
                           trial=number)
        for payload, job in jobs:
            t0 = time.perf_counter()
            images = []
            job = dataclasses.replace(job, infotext_params=trial_infotext(self.study, number, params))
            for img in self.host.generate(job, self.should_stop):
                images.append(img)
                if self.should_stop():
                    break
            timings["generate"] += time.perf_counter() - t0
            if self.should_stop() or len(images) < job.n_images:
                raise RunStopped()
            t0 = time.perf_counter()
            batch = [ImageToScore(g.image, g.prompt, g.negative_prompt, g.seed, payload.name, i)
                     for i, g in enumerate(images)]
            chosen = [s for s in scorers if not payload.scorers or s.name in payload.scorers]
            scores = {s.name: [float(x) for x in s.score(batch, ctx)] for s in chosen}
            timings["score"] += time.perf_counter() - t0
            per_payload[payload.name] = scores
            for i, g in enumerate(images):
                yield self._emit(ev.ImageScored(
                    number, payload.name, i, g.image, g.seed, g.prompt, g.negative_prompt,
                    g.infotext, {name: vals[i] for name, vals in scores.items()}, params))
        return per_payload

    def _score_inputs(self, planner, engine, slot, model_config, scorers, jobs):
        """Each input model scored once as a reference row (not an Optuna trial)."""
        for m in self.config.models:
            recipe = planner.model_recipe(m)
            engine.apply(recipe, slot, model_config)
            per_scorer = yield from self._generate_and_score(-1, {"model": m.name}, scorers, jobs,
                                                            {"generate": 0.0, "score": 0.0})
            value, per_payload = combine_trial(
                per_scorer, {s.name: s.weight for s in self.config.scorers},
                {p.name: p.weight for p in self.config.payloads},
                self.config.scoring.scorer_mean, self.config.scoring.payload_mean)
            yield self._emit(ev.ReferenceScored(m.name, value, per_payload))


def trial_infotext(study: optuna.Study | None, number: int, params: dict[str, Any]) -> dict[str, str]:
    """The infotext fields of a trial's images: which study and trial, and its parameters."""
    name = study.study_name if study is not None else ""
    if number < 0:  # a reference row: one of the input models as it is
        return {"sd-optim": f"{name} input {params.get('model', '')}".strip()}
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return {"sd-optim": f"{name} trial {number}".strip(), **({"sd-optim params": values} if values else {})}


def _payload_fp(p: Payload, job: GenerationJob) -> list[Any]:
    return [p.name, job.prompt, job.negative_prompt, p.seed, p.steps, p.cfg_scale, p.sampler,
            p.scheduler, p.width, p.height, p.batch_size, p.weight, sorted(p.scorers)]


def _best(study: optuna.Study) -> float | None:
    try:
        return study.best_value
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
