"""A run's own study kept in memory and written behind the trials (sd_optim/run/recorder.py):
the database ends up holding exactly the study the run kept, a failed write stops the run with
the reason, a resume completes the database from the run folder, and two processes never run
one study in memory at once. A storage URL is written directly, as Optuna writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from test_runner import make_config, read_rows, run

from sd_optim.errors import ConfigError
from sd_optim.run import events as ev
from sd_optim.run.recorder import MARKER, RUNNER_ATTR, BufferedRecorder
from sd_optim.run.runner import Runner, RunOptions
from sd_optim.run.study import INTERRUPTED, _process_start

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def cfg(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    return lambda **kw: make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", **kw)


def db_study(out: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / 'study.db'}")


def summary(trials) -> list[tuple]:
    return [(t.number, t.state.name, t.value, t.params, t.user_attrs, t.system_attrs) for t in trials]


def test_the_database_gets_exactly_the_study_the_run_kept(sd1_host, cfg, tmp_path):
    """Enqueued trials (filled in where the database has them), a failed trial, completed ones:
    the database equals the in-memory study, trial for trial, once the run has ended."""
    config = cfg(optimizer={"baseline": ["defaults", "midpoint"], "trials": 4},
                 merge={"method": "sd_optim_test_fragile_sum"})
    runner = Runner(config, sd1_host, RunOptions())
    final = None
    for final in runner.events():
        pass
    assert isinstance(final, ev.RunFinished) and final.reason == "completed"
    kept = runner.state.study.get_trials()
    assert {t.state.name for t in kept} == {"COMPLETE", "FAIL"}  # alpha > 0.6 fails this method
    assert kept[0].user_attrs["sd_optim.baseline"] == "defaults"
    assert summary(db_study(tmp_path / "runs").get_trials()) == summary(kept)
    assert not (tmp_path / "runs" / "s" / MARKER).exists()
    study = db_study(tmp_path / "runs")
    assert study._storage.get_study_system_attrs(study._study_id)[RUNNER_ATTR] == ""  # released


def test_a_failed_database_write_stops_the_run_and_a_resume_completes_it(sd1_host, cfg, tmp_path, monkeypatch):
    """The study's database refuses a write (a locked or full disk): the run stops saying so;
    the run folder has every finished trial, and a resume writes them into the study."""
    calls = []

    def refuse(self, frozen):
        calls.append(frozen.number)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(BufferedRecorder, "_write", refuse)
        final = run(cfg(optimizer={"trials": 3}), sd1_host)
    assert final.reason.startswith("stopped: could not write the study: OSError") and "No space left" in final.reason
    assert calls == [0] and final.trials in (1, 2)  # the second trial may have run when the write failed
    assert db_study(tmp_path / "runs").get_trials() == []
    rows = [r for r in read_rows(final.run_dir) if r["kind"] == "trial"]

    final = run(cfg(optimizer={"trials": 1}), sd1_host, resume="s")
    assert final.reason == "completed"
    study = db_study(tmp_path / "runs")
    assert [(t.number, t.state.name, t.value, t.params) for t in study.trials[:len(rows)]] == \
        [(r["number"], r["state"], r["value"], r["params"]) for r in rows]
    assert len(study.trials) == len(rows) + 1 and study.trials[-1].state.name == "COMPLETE"
    assert study.trials[0].user_attrs["seconds"] == {k: round(v, 4) for k, v in rows[0]["timings"].items()}


def test_a_marker_of_an_ended_process_is_an_interrupted_trial(sd1_host, cfg, tmp_path):
    """``running.json`` naming a trial the study lacks, left by a process that has ended: a resume
    records that trial as failed, "interrupted (process ended)"; one naming a trial the study
    has, or another study, changes nothing."""
    run(cfg(optimizer={"trials": 1}), sd1_host)
    folder = tmp_path / "runs" / "s"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    owner = f"{os.uname().nodename}:{ended.stdout.strip()}:1"
    (folder / MARKER).write_text(json.dumps({"study": "s", "number": 1, "owner": owner,
                                             "params": {"diffuser.all.alpha": 0.3, "clip_l.all.alpha": 0.4}}))
    run(cfg(optimizer={"trials": 1}), sd1_host, resume="s")
    study = db_study(tmp_path / "runs")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs["fail_reason"] == INTERRUPTED
    assert study.trials[1].params == {"diffuser.all.alpha": 0.3, "clip_l.all.alpha": 0.4}
    for marker in ({"study": "s", "number": 0, "owner": owner, "params": {}},
                   {"study": "other", "number": 3, "owner": owner, "params": {}}):
        (folder / MARKER).write_text(json.dumps(marker))
        run(cfg(optimizer={"trials": 1}), sd1_host, resume="s")
    assert [t.state.name for t in db_study(tmp_path / "runs").trials] == ["COMPLETE", "FAIL"] + ["COMPLETE"] * 3


def test_a_study_another_live_process_runs_is_refused(sd1_host, cfg, tmp_path):
    """Two processes running one study in memory would number their trials alike: the second is
    refused naming the first; once that process has ended, the study resumes."""
    run(cfg(optimizer={"trials": 1}), sd1_host)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"{os.uname().nodename}:{sleeper.pid}:{_process_start(sleeper.pid)}"
        study = db_study(tmp_path / "runs")
        study._storage.set_study_system_attr(study._study_id, RUNNER_ATTR, owner)
        with pytest.raises(ConfigError) as refused:
            run(cfg(optimizer={"trials": 1}), sd1_host, resume="s")
        problem = refused.value.problems[0]
        assert problem.field == "optimizer.study" and owner in problem.message and problem.value == "s"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run(cfg(optimizer={"trials": 1}), sd1_host, resume="s").reason == "completed"
    assert len(db_study(tmp_path / "runs").trials) == 2


def test_a_storage_url_is_written_directly(sd1_host, cfg, tmp_path):
    """A storage the user named (maybe shared with other processes) has each trial as it runs."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    runner = Runner(cfg(optimizer={"storage": url, "trials": 2}), sd1_host, RunOptions())
    seen = []
    for event in runner.events():
        if isinstance(event, ev.TrialMerged):  # the trial is in the database while it runs
            seen.append([t.state.name for t in optuna.load_study(study_name="s", storage=url).trials])
    assert seen == [["RUNNING"], ["COMPLETE", "RUNNING"]]
    assert not (tmp_path / "runs" / "s" / MARKER).exists()


def test_trial_overhead_benchmark_runs(tmp_path):
    """bench/trial_overhead.py end to end on a couple of trials (the figures are the README's)."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "trial_overhead.py"
    done = subprocess.run([sys.executable, str(bench), "--trials", "2", "--repeats", "1"], capture_output=True,
                          text=True, timeout=600, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("buffered", "direct"):
        assert 0 <= result[mode]["rest_share"] < 1 and result[mode]["trial_ms"] > 0
    assert result["direct_over_buffered"] > 0
