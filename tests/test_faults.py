"""The fault-injection matrix: faults x stages of a run, on the standalone host and tiny real models.

Every cell runs a real 2-trial study (3 where a failed trial should let the run go on) through
the run manager (the tab's and the API's way in) and injects one fault into trial 1 at one stage. For every cell: the original weights are back
bit-exact, no trial is left RUNNING (after a kill or a full disk: once the study is resumed), every
finished trial is in the study and in ``trials.jsonl`` with the same state, and the run ends the
way the README's "What happens when something goes wrong" says. The injection wraps the product's
own functions (test doubles for the faults only, never for the run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import test_entry
import torch
from PIL import Image
from test_host_a1111 import assert_original as assert_webui_original
from test_runner import assert_original

from sd_optim.hosts.diffusers_host import DiffusersHost
from sd_optim.merging import MergeEngine
from sd_optim.run.artifacts import ArtifactWriter, RunFolder
from sd_optim.run.recorder import MARKER, BufferedRecorder
from sd_optim.run.runner import Runner
from sd_optim.run.study import ABANDONED, INTERRUPTED
from sd_optim.scoring.image_stats import ImageStatsScorer
from sd_optim.scoring.reference import ReferenceScorer
from sd_optim.search.planning import MergePlanner
from sd_optim.tiny_models import TINY_SIZE
from sd_optim.ui.runs import Defaults, RunManager

optuna.logging.set_verbosity(optuna.logging.WARNING)
a1111 = test_entry.webui  # the fake A1111 WebUI, as a fixture of this module too

FAULTY_TRIAL = 1
PARTIAL_WRITE_AT = 10  # the key of the merge at which "after a partial write" strikes

STAGES = {  # stage -> (class, method) the fault is injected into
    "input loading": (MergeEngine, "cached"),
    "recipe build": (MergePlanner, "recipe"),
    "merge": (MergeEngine, "apply"),
    "partial write": (MergeEngine, "_write_key"),  # one key of the fast path's merge
    "generation": (DiffusersHost, "generate"),
    "scorer image_stats": (ImageStatsScorer, "score"),
    "scorer reference": (ReferenceScorer, "score"),
    "artifact writing": (ArtifactWriter, "_image"),
}
AFTER_IMAGES = ("scorer image_stats", "scorer reference", "artifact writing")  # past the last image boundary
# the study's database written behind the run: trial 0 is written while trial 1 generates
STUDY_WRITE = {"study write": (BufferedRecorder, "_write")}


@dataclass
class Outcome:
    reason: str  # how the run ends (a prefix of RunFinished.reason)
    faulty_state: str  # trial 1's final state
    faulty_reason: str = ""  # a part of trial 1's fail reason
    trials: int = 2  # trials the run ran


@dataclass
class Cell:
    fault: str
    stage: str


class Injector:
    """Fires ``fault`` once, in trial 1, when the run reaches ``stage``."""

    def __init__(self, cell: Cell, ctx: dict):
        self.cell, self.ctx = cell, ctx
        self.trial = -1
        self.calls = 0
        self.fired = False

    def due(self) -> bool:
        if self.fired or self.trial != FAULTY_TRIAL:
            return False
        self.calls += 1
        if self.cell.stage == "partial write" and self.calls < PARTIAL_WRITE_AT:
            return False
        self.fired = True
        return True


def _raise_or_act(fault: str, ctx: dict) -> None:
    """The faults that act and then let the stage go on (or never return)."""
    if fault == "exception":
        raise RuntimeError("injected fault")
    if fault == "cuda oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    if fault == "stop":
        ctx["manager"].stop()
    elif fault == "interrupt":  # the host's own Interrupt (the WebUI's button)
        ctx["interrupt"]()
    elif fault == "ui reload":  # on_script_unloaded from the WebUI's thread: stop and wait for the restore
        threading.Thread(target=ctx["unload"], daemon=True).start()
        _wait_for(lambda: ctx["manager"].current.runner.control.stopping)
    elif fault == "input replaced":  # `cp other.safetensors b.safetensors`: rewritten in place
        shutil.copyfile(ctx["other_model"], ctx["replaced_model"])
    elif fault == "full disk":
        _fill(ctx["disk"])
    elif fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _fill(folder: Path) -> None:
    """Use up every free byte of the file system holding ``folder``."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass


def install(monkeypatch, injector: Injector) -> None:
    """Wrap the stage's function (and track the trial number through the runner's events)."""
    original_emit = Runner._emit

    def emit(self, event):
        if type(event).__name__ == "TrialStarted":
            injector.trial = event.number
        return original_emit(self, event)

    monkeypatch.setattr(Runner, "_emit", emit)
    cls, name = {**STAGES, **STUDY_WRITE}[injector.cell.stage]
    if injector.cell.stage == "generation":  # the host's own
        cls = type(injector.ctx["host"])
    original = getattr(cls, name)
    fault, ctx = injector.cell.fault, injector.ctx

    if injector.cell.stage == "generation":
        def wrapper(self, *args, **kwargs):
            for i, image in enumerate(original(self, *args, **kwargs)):
                yield image
                if i == 0 and injector.due():  # after the first image of the batch
                    _raise_or_act(fault, ctx)
    else:
        def wrapper(self, *args, **kwargs):
            if not injector.due():
                return original(self, *args, **kwargs)
            if fault == "nan weights" and name == "_write_key":  # the key written, then NaN in it
                original(self, *args, **kwargs)
                slot, _, key = args[:3]
                slot[key] = torch.full_like(slot[key], math.nan)
                return None
            if fault == "nan weights":  # after the whole merge: NaN into the slot's first keys
                stats = original(self, *args, **kwargs)
                slot = args[1]
                for key in list(slot)[:40]:
                    if slot[key].is_floating_point():  # not the integer position_ids some keep
                        slot[key] = torch.full_like(slot[key], math.nan)
                return stats
            if fault == "nan score":
                return [math.nan] * len(args[0])
            _raise_or_act(fault, ctx)
            return original(self, *args, **kwargs)
    monkeypatch.setattr(cls, name, wrapper)


STOPS = ("stop", "interrupt", "ui reload")


def trials_of(cell: Cell) -> int:
    """The study's trials: a third one shows the run going on after a failed trial, or a stop
    that comes after trial 1's last image ending the run before trial 2."""
    return 3 if cell.fault == "exception" or (cell.fault in STOPS and cell.stage in AFTER_IMAGES) else 2


def expected(cell: Cell, host: DiffusersHost) -> Outcome:
    fault, stage, n = cell.fault, cell.stage, trials_of(cell)
    stop_reasons = {"stop": "stopped", "interrupt": host.stop_reason(), "ui reload": "the extension was unloaded"}
    if fault in stop_reasons:
        reason = stop_reasons[fault]
        if stage in AFTER_IMAGES:  # every image was in: the trial is scored, then the run stops
            return Outcome(reason, "COMPLETE", trials=2)
        return Outcome(reason, "FAIL", reason, trials=2)
    if fault in ("exception", "cuda oom"):
        what = "RuntimeError: injected fault" if fault == "exception" else "OutOfMemoryError"
        if stage == "artifact writing":  # what cannot be recorded ends the run
            return Outcome("stopped: could not record the run", "FAIL", what, trials=2)
        return Outcome("completed", "FAIL", what, trials=n)
    if fault == "nan weights":  # NaN weights render a picture like any other; it is scored as such
        return Outcome("completed", "COMPLETE", trials=n)
    if fault == "nan score":
        return Outcome("completed", "FAIL", "is not a finite number", trials=n)
    if fault == "input replaced":  # the run holds its own copy of every input
        return Outcome("completed", "COMPLETE", trials=n)
    if fault == "full disk":
        return Outcome("stopped: ", "FAIL", "No space left on device", trials=2)
    raise AssertionError(cell)


# Every stage for an exception and a stop; the faults that take the same path (an out-of-memory
# error is an exception; Interrupt and a UI reload are stops) at the stages where they differ
# most; a replaced input once the inputs are loaded.
CELLS = [Cell(f, s) for f in ("exception", "stop") for s in STAGES]
CELLS += [Cell(f, s) for f in ("cuda oom", "interrupt", "ui reload")
          for s in ("input loading", "partial write", "generation", "scorer reference", "artifact writing")]
CELLS += [Cell("input replaced", s) for s in ("merge", "generation", "artifact writing")]
CELLS += [Cell("nan weights", s) for s in ("merge", "partial write")]
CELLS += [Cell("nan score", s) for s in ("scorer image_stats", "scorer reference")]
DISK_STAGES = ("merge", "generation", "scorer reference", "artifact writing")
KILL_STAGES = ("partial write", "generation", "artifact writing", "study write")


# --- the run ---------------------------------------------------------------------------------

@pytest.fixture
def inputs(tiny_sd1_paths, tmp_path):
    """Copies of the tiny models (a cell may overwrite one) and the reference scorer's images."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    copies = [Path(shutil.copy(p, folder / f"m{i}.safetensors")) for i, p in enumerate(tiny_sd1_paths)]
    refs = folder / "refs"
    refs.mkdir()
    for i in range(2):
        Image.fromarray(np.full((TINY_SIZE, TINY_SIZE, 3), 90 + 60 * i, np.uint8)).save(refs / f"{i}.png")
    return {"models": copies, "refs": refs}


def config(inputs: dict, config_dir: Path, output_dir: Path, study: str = "faults", trials: int = 2) -> dict:
    a, b, _ = inputs["models"]
    return {
        "models": [{"path": str(a), "name": "a"}, {"path": str(b), "name": "b"}],
        "diffusers_config": str(config_dir),
        "guide": {"diffuser": ["single"], "clip_l": ["single"]},
        "payloads": [{"name": "p", "prompt": "a red fox", "seed": 3, "steps": 2, "cfg_scale": 5,
                      "sampler": "Euler", "width": TINY_SIZE, "height": TINY_SIZE, "batch_size": 2}],
        "scorers": ["image_stats", {"name": "reference", "options": {"folder": str(inputs["refs"])}}],
        "optimizer": {"sampler": "random", "trials": trials, "seed": 0, "study": study},
        "output_dir": str(output_dir),
    }


def run_cell(cell: Cell, host, inputs, config_dir, output_dir, monkeypatch, **ctx_extra) -> tuple[dict, RunManager]:
    manager = ctx_extra.pop("manager", None) or RunManager(host, Defaults())
    ctx = {"manager": manager, "host": host, "interrupt": getattr(host, "interrupt", None),
           "unload": manager.shutdown, "other_model": inputs["models"][2],
           "replaced_model": inputs["models"][1], **ctx_extra}
    injector = Injector(cell, ctx)
    with monkeypatch.context() as m:
        install(m, injector)
        manager.start(config(inputs, config_dir, output_dir, trials=trials_of(cell)))
        status = manager.wait(300)
    assert injector.fired, f"{cell}: the fault never fired"
    assert status["state"] == "finished", status
    return status, manager


def study_of(output_dir: Path, name: str = "faults") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{output_dir / name / 'study.db'}")


def assert_kept(output_dir: Path, name: str = "faults") -> optuna.Study:
    """No trial RUNNING; each finished trial in trials.jsonl with the study's state."""
    study = study_of(output_dir, name)
    states = {t.number: t.state.name for t in study.trials}
    assert "RUNNING" not in states.values(), states
    rows = {r["number"]: r["state"] for r in RunFolder(output_dir / name).read_trials() if r["kind"] == "trial"}
    assert rows == states
    return study


def check(cell: Cell, status: dict, host, output_dir: Path, original: Path) -> None:
    want = expected(cell, host)
    assert status["reason"].startswith(want.reason), (cell, status["reason"])
    assert status["trials_done"] == want.trials, (cell, status)
    assert_original(host, original)
    study = assert_kept(output_dir)
    faulty = study.trials[FAULTY_TRIAL]
    assert faulty.state.name == want.faulty_state, (cell, faulty.state, faulty.user_attrs)
    assert want.faulty_reason in faulty.user_attrs.get("fail_reason", ""), (cell, faulty.user_attrs)
    assert study.trials[0].state.name == "COMPLETE"


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.fault}@{c.stage}")
def test_fault_matrix(cell, sd1_host, inputs, tiny_sd1_config_dir, tiny_sd1_paths, tmp_path, monkeypatch):
    status, _ = run_cell(cell, sd1_host, inputs, tiny_sd1_config_dir, tmp_path / "runs", monkeypatch)
    check(cell, status, sd1_host, tmp_path / "runs", tiny_sd1_paths[0])


WEBUI_CELLS = [Cell(f, s) for f in ("exception", "interrupt", "ui reload")
               for s in ("merge", "generation", "scorer image_stats")]


@pytest.mark.parametrize("cell", WEBUI_CELLS, ids=lambda c: f"{c.fault}@{c.stage}")
def test_fault_matrix_in_a1111(cell, a1111, inputs, tiny_sd1_config_dir, tiny_sd1_paths, tmp_path, monkeypatch):
    """The same faults in the WebUI (the A1111 fake): its Interrupt button and a UI reload
    (``on_script_unloaded``) included."""
    manager = a1111.entry.manager()
    status, _ = run_cell(cell, manager.host, inputs, tiny_sd1_config_dir, tmp_path / "runs", monkeypatch,
                         manager=manager, interrupt=a1111.shared.state.interrupt,
                         unload=a1111.callbacks.script_unloaded_callback)
    check(cell, status, manager.host, tmp_path / "runs", tiny_sd1_paths[0])
    assert_webui_original(a1111, tiny_sd1_paths[0])


# --- a full disk (a small tmpfs) -------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs: room for the run folder until a cell fills it up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("stage", DISK_STAGES)
def test_full_disk(stage, sd1_host, inputs, tiny_sd1_config_dir, tiny_sd1_paths, small_disk, monkeypatch):
    """The trial in flight fails with the reason, the run stops with its summary; once space is
    freed, resuming finds the study clean and trials.jsonl complete."""
    cell = Cell("full disk", stage)
    status, manager = run_cell(cell, sd1_host, inputs, tiny_sd1_config_dir, small_disk / "runs", monkeypatch,
                               disk=small_disk)
    want = expected(cell, sd1_host)
    assert status["reason"].startswith(want.reason) and "No space left" in status["reason"], status
    assert_original(sd1_host, tiny_sd1_paths[0])
    (small_disk / "filler").unlink()
    manager.start(config(inputs, tiny_sd1_config_dir, small_disk / "runs"), resume="faults", trials=1)
    assert manager.wait(300)["reason"] == "completed"
    study = assert_kept(small_disk / "runs")
    assert study.trials[0].state.name == "COMPLETE" and study.trials[FAULTY_TRIAL].state.name == "FAIL"
    reason = study.trials[FAULTY_TRIAL].user_attrs["fail_reason"]
    assert "No space left on device" in reason or reason == ABANDONED, reason


# --- SIGKILL of the process running the study ------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("stage", KILL_STAGES)
def test_sigkill_leaves_a_study_that_resumes_clean(stage, sd1_host, inputs, tiny_sd1_config_dir, tiny_sd1_paths,
                                                    tmp_path):
    out = tmp_path / "runs"
    args = json.dumps({"stage": stage, "host_model": str(tiny_sd1_paths[0]), "config_dir": str(tiny_sd1_config_dir),
                       "models": [str(p) for p in inputs["models"]], "refs": str(inputs["refs"]), "out": str(out)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, __file__, args], env=env, capture_output=True, timeout=300, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-3000:]
    # the database has what was written before the kill (trial 0 goes in while trial 1
    # generates); the run folder has the rest: trial 0's row, and trial 1 named as running
    assert [t.state.name for t in study_of(out).trials] in (["COMPLETE"], [])
    assert json.loads((out / "faults" / MARKER).read_text())["number"] == FAULTY_TRIAL
    row0 = RunFolder(out / "faults").read_trials()[0]

    manager = RunManager(sd1_host, Defaults())
    manager.start(config(inputs, tiny_sd1_config_dir, out), resume="faults", trials=1)
    assert manager.wait(300)["reason"] == "completed"
    study = assert_kept(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert (study.trials[0].value, study.trials[0].params) == (row0["value"], row0["params"])
    assert study.trials[FAULTY_TRIAL].user_attrs["fail_reason"] == INTERRUPTED
    assert not (out / "faults" / MARKER).exists()
    assert_original(sd1_host, tiny_sd1_paths[0])


def _child(args: dict) -> None:
    """The killed process: the same run, killed at ``stage`` of trial 1."""
    torch.set_num_threads(1)
    host = DiffusersHost(args["host_model"], config_dir=args["config_dir"], device="cpu")
    inputs = {"models": [Path(p) for p in args["models"]], "refs": Path(args["refs"])}

    class Patch:  # monkeypatch's setattr, for a process that never comes back to undo it
        @staticmethod
        def setattr(target, name, value):
            setattr(target, name, value)

    manager = RunManager(host, Defaults())
    install(Patch, Injector(Cell("sigkill", args["stage"]), {"manager": manager, "host": host}))
    manager.start(config(inputs, Path(args["config_dir"]), Path(args["out"])))
    manager.wait(300)
    sys.exit("the run ended without being killed")


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))


# --- single faults, each with its own outcome --------------------------------------------------

def test_stale_trial_owners_are_judged_by_process(tmp_path):
    """A trial is stale when the process that claimed it ended (or, in a local SQLite file, when
    nobody claimed it); a live process's trial, and any other machine's, are left alone."""
    from sd_optim.run.study import _process_start, _stale_reason

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"{os.uname().nodename}:{sleeper.pid}:{_process_start(sleeper.pid)}"
        assert _stale_reason(owner, local_storage=True) == ""
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _stale_reason(owner, local_storage=True) == INTERRUPTED
    assert _stale_reason(f"another-machine:{sleeper.pid}:1", local_storage=True) == ""
    assert _stale_reason("", local_storage=True) == INTERRUPTED
    assert _stale_reason("", local_storage=False) == ""  # a shared database: maybe another machine's


def test_cached_inputs_survive_their_file_being_truncated(tiny_sd1_paths, tmp_path):
    """Run in a child process: were the tensors still mapped from the file, reading them after the
    truncation would end it with SIGBUS."""
    path = Path(shutil.copy(tiny_sd1_paths[1], tmp_path / "b.safetensors"))
    code = ("import os, sys, torch\n"
            "from sd_optim.merging import CachedStateDict\n"
            "sd = CachedStateDict.load(sys.argv[1])\n"
            "before = sum(float(t.double().sum()) for t in sd.values())\n"
            "os.truncate(sys.argv[1], 100)\n"
            "after = sum(float(t.double().sum()) for t in sd.values())\n"
            "assert before == after\n"
            "print('same', len(sd))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, timeout=120,
                           check=False)
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert child.stdout.decode().startswith("same")


def test_a_failing_input_model_reference_fails_that_row_only(sd1_host, inputs, tiny_sd1_config_dir, tiny_sd1_paths,
                                                             tmp_path, monkeypatch):
    original = ImageStatsScorer.score

    def score(self, images, ctx):
        if ctx.trial < 0 and not getattr(score, "fired", False):  # the first reference row
            score.fired = True
            raise RuntimeError("injected scorer fault")
        return original(self, images, ctx)

    monkeypatch.setattr(ImageStatsScorer, "score", score)
    manager = RunManager(sd1_host, Defaults())
    data = config(inputs, tiny_sd1_config_dir, tmp_path / "runs")
    data["optimizer"]["score_inputs"] = True
    manager.start(data)
    status = manager.wait(300)
    assert status["reason"] == "completed" and status["trials_done"] == 2
    refs = [r for r in RunFolder(tmp_path / "runs" / "faults").read_trials() if r["kind"] == "reference"]
    assert [(r["model"], r["value"] is None) for r in refs] == [("a", True), ("b", False)]
    assert refs[0]["reason"] == "RuntimeError: injected scorer fault"
    assert_kept(tmp_path / "runs")
    assert_original(sd1_host, tiny_sd1_paths[0])


def test_second_ctrl_c_stops_at_once_restores_and_prints_the_summary(inputs, tiny_sd1_config_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """First Ctrl-C: stop at the next image. Second: at once (the image in flight is not finished).
    A third, while the weights are being put back, only says to wait. The summary still prints."""
    import yaml

    from sd_optim.cli import main
    from sd_optim.hosts.diffusers_host import DiffusersSlot

    presses = []

    def press():
        presses.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    original_generate, original_restore = DiffusersHost.generate, DiffusersSlot.restore

    def generate(self, job, should_stop=lambda: False):
        for image in original_generate(self, job, should_stop):
            if "trial 1" in job.infotext_params.get("sd-optim", "") and not presses:
                press()  # stop at the next image boundary...
                press()  # ...no, at once: raises KeyboardInterrupt here, in the middle of the trial
            yield image

    def restore(self):
        if len(presses) == 2:
            press()  # the third press, while the original weights go back
        original_restore(self)

    monkeypatch.setattr(DiffusersHost, "generate", generate)
    monkeypatch.setattr(DiffusersSlot, "restore", restore)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(inputs, tiny_sd1_config_dir, tmp_path / "runs")), encoding="utf-8")
    code = main(["run", str(path), "--json"])
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and len(presses) == 3
    assert result["reason"] == "stopped at once (Ctrl-C twice)" and result["best_trial"] == 0
    assert "Ctrl-C again to stop at once" in err and "restoring the original weights; wait" in err
    study = assert_kept(tmp_path / "runs")
    assert study.trials[1].user_attrs["fail_reason"] == "stopped at once (Ctrl-C twice)"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_export_cut_short_by_a_full_disk_leaves_nothing_and_can_be_retried(
        sd1_host, inputs, tiny_sd1_config_dir, small_disk, tmp_path):
    from sd_optim.run.exporting import export_trial

    manager = RunManager(sd1_host, Defaults())
    manager.start(config(inputs, tiny_sd1_config_dir, tmp_path / "runs"))
    manager.wait(300)
    out = small_disk / "best.safetensors"
    _fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        export_trial(tmp_path / "runs", "faults", trial=None, out=out)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no final name, no temporary file
    (small_disk / "filler").unlink()
    assert export_trial(tmp_path / "runs", "faults", trial=None, out=out) == out
    assert out.stat().st_size > 0


def test_a_run_whose_every_trial_fails_says_so_in_the_status(sd1_host, inputs, tiny_sd1_config_dir, tmp_path,
                                                             monkeypatch):
    def score(self, images, ctx):
        raise RuntimeError("injected scorer fault")

    monkeypatch.setattr(ImageStatsScorer, "score", score)
    manager = RunManager(sd1_host, Defaults())
    manager.start(config(inputs, tiny_sd1_config_dir, tmp_path / "runs"))
    status = manager.wait(300)
    assert status["failure"] == "every trial failed (2 of 2); the last: RuntimeError: injected scorer fault"
    assert status["failure"] in status["text"]
    assert_kept(tmp_path / "runs")
