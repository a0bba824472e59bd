"""One live run per WebUI process: started from the tab or the API, run in a background thread,
stopped by either, by the WebUI's Interrupt, or when the extension is unloaded.

No gradio and no ``modules.*`` here: the manager only knows a :class:`~sd_optim.hosts.base.Host`
and a dict of WebUI settings, so the tests drive it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, config_from_dict
from ..config.safe_yaml import load_config_mapping
from ..errors import ConfigError, Problem
from ..files.paths import allowed_problem, check_allowed
from ..hosts.base import Host
from ..merging import MergeEngine
from ..run import events as ev
from ..run.memory import release_memory
from ..run.runner import RunControl, Runner, RunOptions, RunState
from ..run.study import existing_studies, storage_url, study_name
from ..run.trials import TrialTools
from ..scoring.manual import RatingDesk
from .views import duration

log = logging.getLogger("sd_optim")


class RunBusy(RuntimeError):
    """A run is already live; ``status`` says which."""

    def __init__(self, status: dict[str, Any], message: str = ""):
        self.status = status
        super().__init__(message or f"an sd-optim run is already live: {status['text']}")


@dataclass
class Defaults:
    """The WebUI settings a config may leave out (Settings -> Optimize Merge)."""

    output_dir: str = ""
    models_dir: str = ""
    storage: str = ""
    cache_budget_gb: float = 0.0


def read_config(source: str | dict, defaults: Defaults | None = None,
                allowed: list[Path] | None = None) -> RunConfig:
    """A run config from a YAML file path, YAML text, or a dict; settings fill what it leaves out.

    Relative paths in a file resolve against the file's folder; in text or a dict, against the
    current folder (the WebUI's). ``allowed``: the only folders the config (and its own file) may
    name, for a request from the API (None: no restriction, the tab's and the CLI's case)."""
    data, base_dir = config_data(source, defaults, allowed)
    config = config_from_dict(data, base_dir=base_dir)
    if allowed is not None:
        check_allowed(config, allowed, default_storage=(defaults or Defaults()).storage)
    return config


def config_data(source: str | dict, defaults: Defaults | None = None,
                allowed: list[Path] | None = None) -> tuple[Any, Path]:
    """(the config's YAML data with the settings filled in, the folder relative paths start from)."""
    defaults = defaults or Defaults()
    base_dir = Path.cwd()
    if isinstance(source, dict):
        data: Any = dict(source)
    else:
        text = str(source).strip()
        if not text:
            raise ConfigError([Problem("config", "give a config file path or YAML text", "")])
        path = Path(text).expanduser()
        if "\n" not in text and path.suffix in (".yaml", ".yml", ".json"):
            if allowed is not None:  # before anything is read: a refused file's contents stay unread
                problem = allowed_problem("config", path, allowed)
                if problem:
                    raise ConfigError([problem])
            if not path.is_file():
                raise ConfigError([Problem("config", "file not found", text)])
            try:
                text, base_dir = path.read_text(encoding="utf-8"), path.resolve().parent
            except UnicodeDecodeError:
                raise ConfigError([Problem("config", "not a text file (UTF-8)", str(path))]) from None
            data = load_config_mapping(text, "config")
        else:
            data = load_config_mapping(text, "config", from_file=False)
    if isinstance(data, dict):
        if defaults.output_dir and "output_dir" not in data:
            data["output_dir"] = defaults.output_dir
        if defaults.models_dir and "models_dir" not in data:
            data["models_dir"] = defaults.models_dir
        if defaults.storage:
            opt = data.setdefault("optimizer", {}) if isinstance(data.get("optimizer", {}), dict) else None
            if opt is not None and not opt.get("storage"):
                opt["storage"] = defaults.storage
    return data, base_dir


@dataclass
class LiveRun:
    runner: Runner
    thread: threading.Thread
    started: float = field(default_factory=time.time)
    last: ev.Event | None = None
    finished: ev.RunFinished | None = None
    error: str = ""
    images: list[Any] = field(default_factory=list)  # the latest trial's (image, caption) pairs
    images_trial: int | None = None  # the trial they belong to
    best_images: list[Any] = field(default_factory=list)  # the best trial's
    first: threading.Event = field(default_factory=threading.Event)  # the first event arrived
    exception: BaseException | None = None
    first_event: ev.Event | None = None
    trial_started: float = 0.0
    trials_timed: int = 0  # finished trials, and their wall seconds in all (for the ETA)
    trial_seconds: float = 0.0


def caption(e: ev.ImageScored) -> str:
    """``reference 0.9312 · trial #4 · cat, image 1``: the scores first (a gallery cuts long captions
    short), then the trial, the prompt set and the image."""
    scores = " · ".join(f"{name} {value:.4f}" for name, value in e.scores.items())
    return (f"{scores} · " if scores else "") + f"trial #{e.trial} · {e.payload}, image {e.index}"


class RunManager:
    """Starts and follows runs. ``host`` is the WebUI's; standalone, ``host_for`` builds the host a
    config asks for (its ``host_model``) instead."""

    def __init__(self, host: Host | None = None, defaults: Defaults | None = None, *,
                 host_for: Callable[[RunConfig], Host] | None = None):
        if (host is None) == (host_for is None):
            raise TypeError("RunManager needs either a host or host_for")
        self.host = host
        self.host_for = host_for
        self.defaults = defaults or Defaults()
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self.version = 0  # bumped on every event: followers wait for a change
        self.current: LiveRun | None = None
        self.busy = ""  # a results action using the host ("look again", ...): runs wait for it

    # --- control ---------------------------------------------------------------------------

    def start(self, source: str | dict, *, trials: int | None = None, resume: str = "",
              fork: str = "", join: bool = False, fresh_name: bool = False,
              allowed: list[Path] | None = None) -> dict[str, Any]:
        """Start a run in the background; refuses at once (``RunBusy``) while one is live and
        raises ``ConfigError`` for a bad config before anything starts. ``fresh_name``: a new
        study without a name gets the default name, numbered past the studies already there
        (the tab's Start pressed twice starts a second study, not an error). ``allowed``: the
        folders a config from the API may name (see :func:`read_config`). ``join``: a worker of
        the shared study ``optimizer.study`` at ``optimizer.storage`` (the CLI's ``worker``)."""
        with self._lock:
            if self.live:
                raise RunBusy(self.status())
            if self.busy:
                raise RunBusy(self.status(), f"the model is busy ({self.busy}); start again when it is done")
            config = read_config(source, self.defaults, allowed)
            if fresh_name and not (resume or join or config.optimizer.study):
                config.optimizer.study = _free_study_name(config)
            if self.host_for is not None:
                self.host = self.host_for(config)
            host = self.host
            assert host is not None
            budget = int(self.defaults.cache_budget_gb * 2**30)
            runner = Runner(config, host, RunOptions(resume=resume, fork=fork, trials=trials, join=join),
                            RunControl(ratings=RatingDesk(on_change=self._bump)),
                            MergeEngine(device=host.device, device_budget_bytes=budget))
            live = LiveRun(runner, threading.Thread(target=self._run, name="sd-optim-run", daemon=True))
            runner.listeners.append(lambda e: self._seen(live, e))
            previous, self.current = self.current, live
            live.thread.start()
            # everything that can refuse the run happens before its first event: report it here
            live.first.wait()
            if live.first_event is None or isinstance(live.first_event, ev.RunFailed):
                live.thread.join()
                self.current = previous  # a refused run hides nothing: the last results stay
                if isinstance(live.exception, ConfigError):
                    raise live.exception
                raise ConfigError([Problem("", f"the run could not start: {live.error}")])
        return self.status()

    def _seen(self, live: LiveRun, event: ev.Event) -> None:
        live.last = event
        if live.first_event is None:
            live.first_event = event
        live.first.set()
        if isinstance(event, ev.TrialStarted):
            live.trial_started = time.time()
        elif isinstance(event, ev.ImageScored) and event.trial >= 0:
            # the previous trial's images stay up until the next trial's first one arrives
            same = live.images_trial == event.trial
            live.images = [*(live.images if same else []), (event.image, caption(event))]
            live.images_trial = event.trial
        elif isinstance(event, ev.TrialFinished):
            live.trials_timed += 1
            live.trial_seconds += time.time() - live.trial_started
        elif isinstance(event, ev.NewBest):
            live.best_images = list(live.images)
        elif isinstance(event, ev.RunFinished):
            live.finished = event
        self._bump()

    def _bump(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until an event newer than version ``seen`` (or ``timeout``); the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def _run(self) -> None:
        live = self.current
        assert live is not None
        try:
            for _ in live.runner.events():
                pass
        except Exception as e:  # noqa: BLE001 - reported through status(); the model is restored
            live.error = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            live.exception = _without_frames(e)
            log.warning("sd-optim run failed: %s", live.error)
        finally:
            # the cached input models are several GB; a finished run must not keep them
            if live.runner.engine is not None:
                live.runner.engine.close()
            live.first.set()
            self._bump()
            release_memory()

    def stop(self, reason: str = "stopped") -> dict[str, Any]:
        live = self.current
        if live is not None and live.thread.is_alive():
            live.runner.control.stop(reason)
        return self.status()

    def pause(self) -> dict[str, Any]:
        """The run stops between trials (the trial in flight finishes first) until :meth:`resume`."""
        live = self.current
        if live is not None and live.thread.is_alive():
            live.runner.control.pause()
            self._bump()
        return self.status()

    def resume(self) -> dict[str, Any]:
        live = self.current
        if live is not None:
            live.runner.control.resume()
            self._bump()
        return self.status()

    def waiting_for_ratings(self) -> list[tuple[int, Any, int]]:
        """(position, image to score, trial) of the live run's images waiting for a rating."""
        live = self.current
        if live is None or not live.thread.is_alive() or live.runner.control.ratings is None:
            return []
        return live.runner.control.ratings.waiting()

    def rate(self, value: Any, *, whole_trial: bool = False) -> None:
        """Rate the first image waiting (1-10, or "skip"), or every image of its trial."""
        live = self.current
        if live is None or live.runner.control.ratings is None:
            return
        desk = live.runner.control.ratings
        if whole_trial:
            desk.rate_trial(value)
        else:
            desk.rate(value)

    def adjust(self, source: str | dict) -> list[str]:
        """Apply a set-up's trial limit and early-stopping rules to the live run; what they set, as
        lines for the user. Anything else that changed would make the study's trials incomparable:
        refused (ConfigError), each change named, with the way out (fork)."""
        live = self.current
        if live is None or not live.thread.is_alive():
            raise ConfigError([Problem("optimizer", "no live run to adjust; press Start")])
        runner = live.runner
        new = read_config(source, self.defaults)
        study = runner.state.study.study_name if runner.state is not None else "the study"
        changed = incomparable_changes(runner.config, new)
        if changed:
            raise ConfigError([Problem(name, "changed since the run started; its trials would not be comparable "
                                       f"with the study's. Stop the run, then Start as fork of {study!r} to reuse "
                                       "its parameter sets") for name in changed])
        ran = runner.tally.trials_done
        runner.control.trial_limit = max(new.optimizer.trials, ran)
        runner.config.optimizer.early_stopping = new.optimizer.early_stopping
        es = new.optimizer.early_stopping
        self._bump()
        return [f"trials this run: {runner.control.trial_limit}" + (f" ({ran} done)" if ran else ""),
                "early stopping: " + (f"after {es.patience} trials without a gain of {es.min_improvement}"
                                      if es.patience else "off")]

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        live = self.current
        if live is not None:
            live.thread.join(timeout)
        return self.status()

    def trial_tools(self) -> TrialTools:
        """Actions on the last run's trials that only read (refused while a run is live)."""
        live = self.current
        if live is None:
            raise ConfigError([Problem("trial", "no run yet in this session")])
        if self.live:
            raise RunBusy(self.status())
        return TrialTools(live.runner)

    @contextlib.contextmanager
    def trial_action(self, what: str):
        """The last run's trial tools, holding the host: a run cannot start meanwhile, nor another
        action ("look again" renders for a while)."""
        with self._lock:
            if self.busy:
                raise RunBusy(self.status(), f"the model is busy ({self.busy}); try again when it is done")
            tools = self.trial_tools()
            self.busy = what
        try:
            yield tools
        finally:
            self.busy = ""
            release_memory()

    def shutdown(self, timeout: float = 120.0) -> None:
        """The extension is being unloaded: stop the run and wait until the model is restored."""
        self.stop("the extension was unloaded")
        self.wait(timeout)

    # --- status ----------------------------------------------------------------------------

    def run_state(self) -> RunState | None:
        """The latest run's state (its study, run folder, planner) once it was prepared; None
        before a run, or when the latest one was refused."""
        live = self.current
        return live.runner.state if live is not None else None

    @property
    def live(self) -> bool:
        return self.current is not None and self.current.thread.is_alive()

    def status(self) -> dict[str, Any]:
        live = self.current
        if live is None:
            return {"state": "idle", "text": "no run yet"}
        runner = live.runner
        tally = runner.tally
        started, best = tally.started, tally.best
        out: dict[str, Any] = {
            "state": "running" if live.thread.is_alive() else ("failed" if live.error else "finished"),
            "study": started.study if started else "",
            "run_dir": started.run_dir if started else "",
            "trials_done": tally.trials_done,
            "trials_total": runner.control.trial_limit,
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "paused": runner.control.paused,
            "stopping": runner.control.stopping and live.thread.is_alive(),
            "error": live.error,
            "current_trial": tally.current_trial,
            "awaiting_ratings": len(self.waiting_for_ratings()),
            "last_timings": dict(tally.last_timings),
            "eta_seconds": None,
            "confirming": tally.confirming,
        }
        if live.trials_timed and out["trials_total"] and live.thread.is_alive() and not out["stopping"]:
            mean = live.trial_seconds / live.trials_timed
            left = max(out["trials_total"] - tally.trials_done, 0)
            out["eta_seconds"] = max(mean * left - (time.time() - live.trial_started), 0.0)
        if live.finished is not None:
            f = live.finished
            out.update(reason=f.reason, best_trial=f.best_trial, best_value=f.best_value,
                       best_recipe=f.best_recipe, kept_trial=f.kept_trial,
                       saved_checkpoint=f.saved_checkpoint, after_run_note=f.after_run_note,
                       failure=f.failure, confirmed_trial=f.confirmed_trial, confirmed_value=f.confirmed_value,
                       sampler_note=f.sampler_note)
            if f.kept_trial is not None:
                kept = self.host.kept_merge()
                out["kept_loaded"] = kept is not None and kept.study == f.study and kept.trial == f.kept_trial
                out["kept_until"] = self.host.kept_until
        out["text"] = _describe(out)
        return out


# what decides what a trial's value means: a change here makes a study's trials incomparable
_COMPARABLE = ("mode", "models", "loras", "base_model", "merge", "recipe", "guide", "payloads", "scorers",
               "scoring", "wildcards_dir")


def incomparable_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """The config fields whose change would make a study's trials incomparable."""
    a, b = old.absolute(), new.absolute()
    # the scorers' memory bound changes no value
    a.scoring, b.scoring = (dataclasses.replace(x.scoring, vram_gb=0.0) for x in (a, b))
    return [name for name in _COMPARABLE if getattr(a, name) != getattr(b, name)]


def _without_frames(error: BaseException) -> BaseException:
    """``error`` kept for status() without its traceback: the frames would keep the failed run's
    models, scorers and images alive."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = None
        e = e.__cause__ or e.__context__
    return error


def _free_study_name(config: RunConfig) -> str:
    label = Path(config.recipe.path).stem if config.mode == "recipe" else config.merge.method
    base = study_name("", label, [m.name for m in config.models])
    root = config.resolve_path(config.output_dir)
    name, n = base, 1
    while True:
        url = storage_url(config.optimizer.storage, root / name)
        if (config.optimizer.storage or (root / name / "study.db").exists()) and \
                name in [s.study_name for s in existing_studies(url)]:
            n += 1
            name = f"{base}-{n}"
            continue
        if not config.optimizer.storage and (root / name).exists() and any((root / name).iterdir()):
            n += 1  # a run folder without a study (a refused run) is not reused either
            name = f"{base}-{n}"
            continue
        return name


def _describe(s: dict[str, Any]) -> str:
    best = f", best {s['best_value']:.4f} (trial #{s['best_trial']})" if s.get("best_value") is not None else ""
    head = f"study {s['study']!r}: " if s.get("study") else ""
    if s["state"] == "running" and s.get("stopping"):  # said at once: the image in flight may take a while
        return f"{head}stopping after the current image…, {s['trials_done']}/{s['trials_total']} trials{best}"
    if s["state"] == "running":
        text = f"{head}running, {s['trials_done']}/{s['trials_total']} trials{best}"
        if s.get("eta_seconds") is not None:
            text += f", about {duration(s['eta_seconds'])} left"
        if s.get("paused"):
            text += " (paused)"
        return text
    if s["state"] == "failed":
        return f"{head}failed: {s['error']}"
    text = f"{head}finished ({s.get('reason', '?')}), {s['trials_done']} trials{best}"
    if s.get("confirmed_trial") is not None:
        text += f"; on fresh seeds too: trial #{s['confirmed_trial']} ({s['confirmed_value']:.4f} on both)"
    if s.get("failure"):
        text += f"; {s['failure']}"
    if s.get("sampler_note"):
        text += f"; {s['sampler_note']}"
    if s.get("kept_trial") is not None:
        text += (f"; trial #{s['kept_trial']} stays loaded ({s['kept_until']})" if s.get("kept_loaded") else
                 f"; trial #{s['kept_trial']} was kept loaded until the model was reloaded")
    if s.get("saved_checkpoint"):
        text += f"; saved {s['saved_checkpoint']}"
    if s.get("after_run_note"):
        text += f"; {s['after_run_note']}"
    return text
