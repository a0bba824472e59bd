"""One live run per WebUI process: started from the tab or the API, run in a background thread,
stopped by either, by the WebUI's Interrupt, or when the extension is unloaded.

No gradio and no ``modules.*`` here: the manager only knows a :class:`~sd_optim.hosts.base.Host`
and a dict of WebUI settings, so the tests drive it directly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import events as ev
from ..config import RunConfig, config_from_dict
from ..errors import ConfigError
from ..hosts.base import Host
from ..merging import MergeEngine
from ..runner import RunControl, Runner, RunOptions

log = logging.getLogger("sd_optim")


class RunBusy(RuntimeError):
    """A run is already live; ``status`` says which."""

    def __init__(self, status: dict[str, Any]):
        self.status = status
        super().__init__(f"an sd-optim run is already live: {status['text']}")


@dataclass
class Defaults:
    """The WebUI settings a config may leave out (Settings -> Optimize Merge)."""

    output_dir: str = ""
    models_dir: str = ""
    storage: str = ""
    cache_budget_gb: float = 0.0


def read_config(source: str | dict, defaults: Defaults | None = None) -> RunConfig:
    """A run config from a YAML file path, YAML text, or a dict; settings fill what it leaves out.

    Relative paths in a file resolve against the file's folder; in text or a dict, against the
    current folder (the WebUI's)."""
    defaults = defaults or Defaults()
    base_dir = Path.cwd()
    if isinstance(source, dict):
        data: Any = dict(source)
    else:
        text = str(source).strip()
        if not text:
            raise ConfigError(["config: give a config file path or YAML text, got an empty value"])
        path = Path(text).expanduser()
        if "\n" not in text and path.suffix in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise ConfigError([f"config: file not found, got {text!r}"])
            text, base_dir = path.read_text(encoding="utf-8"), path.resolve().parent
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([f"config: not valid YAML ({e})"]) from None
    if isinstance(data, dict):
        if defaults.output_dir and "output_dir" not in data:
            data["output_dir"] = defaults.output_dir
        if defaults.models_dir and "models_dir" not in data:
            data["models_dir"] = defaults.models_dir
        if defaults.storage:
            opt = data.setdefault("optimizer", {}) if isinstance(data.get("optimizer", {}), dict) else None
            if opt is not None and not opt.get("storage"):
                opt["storage"] = defaults.storage
    return config_from_dict(data, base_dir=base_dir)


@dataclass
class LiveRun:
    runner: Runner
    thread: threading.Thread
    started: float = field(default_factory=time.time)
    last: ev.Event | None = None
    finished: ev.RunFinished | None = None
    error: str = ""
    images: list[Any] = field(default_factory=list)  # the latest trial's images
    first: threading.Event = field(default_factory=threading.Event)  # the first event arrived
    exception: BaseException | None = None
    first_event: ev.Event | None = None


class RunManager:
    def __init__(self, host: Host, defaults: Defaults | None = None):
        self.host = host
        self.defaults = defaults or Defaults()
        self._lock = threading.Lock()
        self.current: LiveRun | None = None

    # --- control ---------------------------------------------------------------------------

    def start(self, source: str | dict, *, trials: int | None = None, resume: str = "",
              fork: str = "") -> dict[str, Any]:
        """Start a run in the background; refuses at once (``RunBusy``) while one is live and
        raises ``ConfigError`` for a bad config before anything starts."""
        with self._lock:
            if self.live:
                raise RunBusy(self.status())
            config = read_config(source, self.defaults)
            budget = int(self.defaults.cache_budget_gb * 2**30)
            runner = Runner(config, self.host, RunOptions(resume=resume, fork=fork, trials=trials),
                            RunControl(), MergeEngine(device=self.host.device, device_budget_bytes=budget))
            live = LiveRun(runner, threading.Thread(target=self._run, name="sd-optim-run", daemon=True))
            runner.listeners.append(lambda e: self._seen(live, e))
            self.current = live
            live.thread.start()
            # everything that can refuse the run happens before its first event: report it here
            live.first.wait()
            if live.first_event is None or isinstance(live.first_event, ev.RunFailed):
                live.thread.join()
                if isinstance(live.exception, ConfigError):
                    raise live.exception
                raise ConfigError([f"the run could not start: {live.error}"])
        return self.status()

    def _seen(self, live: LiveRun, event: ev.Event) -> None:
        live.last = event
        if live.first_event is None:
            live.first_event = event
        live.first.set()
        if isinstance(event, ev.TrialStarted):
            live.images = []
        elif isinstance(event, ev.ImageScored):
            live.images.append(event.image)
        elif isinstance(event, ev.RunFinished):
            live.finished = event

    def _run(self) -> None:
        live = self.current
        assert live is not None
        try:
            for _ in live.runner.events():
                pass
        except Exception as e:  # noqa: BLE001 - reported through status(); the model is restored
            live.error = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            live.exception = e
            log.warning("sd-optim run failed: %s", live.error)
        finally:
            # the cached input models are several GB; a finished run must not keep them
            if live.runner.engine is not None:
                live.runner.engine.close()
            live.first.set()

    def stop(self, reason: str = "stopped") -> dict[str, Any]:
        live = self.current
        if live is not None and live.thread.is_alive():
            live.runner.control.stop(reason)
        return self.status()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        live = self.current
        if live is not None:
            live.thread.join(timeout)
        return self.status()

    def shutdown(self, timeout: float = 120.0) -> None:
        """The extension is being unloaded: stop the run and wait until the model is restored."""
        self.stop("the extension was unloaded")
        self.wait(timeout)

    # --- status ----------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.current is not None and self.current.thread.is_alive()

    def status(self) -> dict[str, Any]:
        live = self.current
        if live is None:
            return {"state": "idle", "text": "no run yet"}
        runner = live.runner
        history = runner.history
        done = [e for e in history if isinstance(e, ev.TrialFinished)]
        started = next((e for e in history if isinstance(e, ev.RunStarted)), None)
        best = [e for e in history if isinstance(e, ev.NewBest)]
        out: dict[str, Any] = {
            "state": "running" if live.thread.is_alive() else ("failed" if live.error else "finished"),
            "study": started.study if started else "",
            "run_dir": started.run_dir if started else "",
            "trials_done": len(done),
            "trials_total": runner.control.trial_limit,
            "best_trial": best[-1].number if best else None,
            "best_value": best[-1].value if best else None,
            "paused": runner.control.paused,
            "error": live.error,
        }
        if live.finished is not None:
            f = live.finished
            out.update(reason=f.reason, best_trial=f.best_trial, best_value=f.best_value,
                       best_recipe=f.best_recipe, kept_trial=f.kept_trial,
                       saved_checkpoint=f.saved_checkpoint, after_run_note=f.after_run_note)
            if f.kept_trial is not None:
                kept = self.host.kept_merge()
                out["kept_loaded"] = kept is not None and kept.study == f.study and kept.trial == f.kept_trial
        out["text"] = _describe(out)
        return out


def _describe(s: dict[str, Any]) -> str:
    best = f", best {s['best_value']:.4f} (trial {s['best_trial']})" if s.get("best_value") is not None else ""
    head = f"study {s['study']!r}: " if s.get("study") else ""
    if s["state"] == "running":
        return f"{head}running, {s['trials_done']}/{s['trials_total']} trials{best}"
    if s["state"] == "failed":
        return f"{head}failed: {s['error']}"
    text = f"{head}finished ({s.get('reason', '?')}), {s['trials_done']} trials{best}"
    if s.get("kept_trial") is not None:
        text += (f"; trial {s['kept_trial']} stays loaded (switching or reloading the checkpoint drops it)"
                 if s.get("kept_loaded") else
                 f"; trial {s['kept_trial']} was kept loaded until the WebUI reloaded the checkpoint")
    if s.get("saved_checkpoint"):
        text += f"; saved {s['saved_checkpoint']}"
    if s.get("after_run_note"):
        text += f"; {s['after_run_note']}"
    return text
