"""Studies shared by several workers through one database (sd_optim/run/shared.py, feed.py): the
study's trial limit across workers, claims (one trial ahead, results written behind), heartbeats
and the retry of a dead worker's trial, joining with another set-up refused. The concurrent cases run real worker processes
(``python -m sd_optim worker``) against a real PostgreSQL server (tests/pg_server.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from test_runner import make_config

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError, StudyMismatchError
from sd_optim.run import events as ev
from sd_optim.run.exporting import export_trial
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.run.shared import RETRY_ATTR, WORKER_ATTR, StudyLock
from sd_optim.search.planning import make_planner
from sd_optim.search.recipes import recipe_text
from sd_optim.tiny_models import TINY_SIZE

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def worker_config(paths, config_dir, out, storage, **optimizer):
    return make_config(paths, config_dir, out, optimizer={"sampler": "random", "trials": 4, "seed": 0,
                                                          "study": "shared", "storage": storage, **optimizer})


def join(config, host, **options):
    runner = Runner(config, host, RunOptions(join=True, **options))
    return runner, run_to_end(runner)


def test_workers_in_turn_share_the_study_limit_and_name_themselves(sd1_host, tiny_sd1_paths,
                                                                   tiny_sd1_config_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=5)
    _, final = join(config, sd1_host, trials=3)
    assert final.reason == "completed" and final.trials == 3
    _, final = join(config, sd1_host)
    assert final.reason == "completed" and final.trials == 2  # the study's 5 in all
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert all(t.user_attrs[WORKER_ATTR]["pid"] == os.getpid() for t in study.trials)
    assert all(t.user_attrs[WORKER_ATTR]["kind"] == "diffusers" for t in study.trials)
    folders = sorted(p.name for p in (tmp_path / "runs" / "shared").iterdir())
    assert len(folders) == 1 and folders[0].endswith(f"-{os.getpid()}")  # one worker's folder
    rows = [json.loads(line) for line in (tmp_path / "runs" / "shared" / folders[0] / "trials.jsonl").open()]
    assert sorted(r["number"] for r in rows) == [0, 1, 2, 3, 4]
    _, final = join(config, sd1_host)
    assert final.reason == "completed" and final.trials == 0


def test_a_worker_claims_its_next_trial_while_one_runs_and_tells_results_behind(sd1_host, tiny_sd1_paths,
                                                                               tiny_sd1_config_dir, tmp_path):
    """While trial k runs, k+1 is already claimed (running in the study, naming this worker), and
    k's result is written on the feed's thread: the trial loop does not wait on the database."""
    import threading

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=3)
    runner = Runner(config, sd1_host, RunOptions(join=True))
    seen, tell_threads = [], set()
    real_tell = optuna.Study.tell

    def tell(self, *args, **kwargs):
        tell_threads.add(threading.current_thread().name)
        return real_tell(self, *args, **kwargs)

    def watch(event):
        if isinstance(event, ev.TrialMerged):
            study = optuna.load_study(study_name="shared", storage=storage)
            seen.append(sorted(t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))))

    optuna.Study.tell = tell
    try:
        final = run_to_end(runner, watch)
    finally:
        optuna.Study.tell = real_tell
    assert final.reason == "completed" and final.trials == 3
    assert seen == [[0, 1], [1, 2], [2]]  # the next one claimed ahead; none after the study's last
    assert tell_threads and all(name.startswith("sd-optim-study") for name in tell_threads)
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(t.user_attrs[WORKER_ATTR]["pid"] == os.getpid() and "seconds" in t.user_attrs for t in study.trials)


def test_a_stopped_worker_hands_back_the_trial_it_claimed_ahead(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                                tmp_path):
    """A worker stopped after a trial leaves the trial it had claimed ahead waiting in the study,
    with its parameters; the next worker runs it (the study's limit is not spent on it)."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=4)
    runner = Runner(config, sd1_host, RunOptions(join=True))
    final = run_to_end(runner, lambda e: isinstance(e, ev.TrialFinished) and runner.control.stop())
    assert final.reason == "stopped" and final.trials == 1
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING]
    lock = StudyLock(storage, "shared")
    try:
        assert lock.counts(study._study_id) == {"COMPLETE": 1, "WAITING": 1}  # the limit counts the first only
    finally:
        lock.close()
    handed_back = study.trials[1].params
    _, final = join(config, sd1_host)
    assert final.reason == "completed" and final.trials == 3  # the study's 4 in all
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert study.trials[1].params == handed_back


def test_a_failed_trial_of_a_worker_is_told_with_its_reason_and_the_worker_goes_on(sd1_host, tiny_sd1_paths,
                                                                                   tiny_sd1_config_dir, tmp_path,
                                                                                   monkeypatch):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=3)
    real = Runner._combine
    calls = []

    def combine(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a scorer broke")
        return real(self, *args)

    monkeypatch.setattr(Runner, "_combine", combine)
    _, final = join(config, sd1_host)
    assert final.reason == "completed" and final.trials == 3
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2
    failed = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert failed.user_attrs["fail_reason"] == "RuntimeError: a scorer broke"


def test_a_result_the_database_refuses_stops_the_worker_and_the_trial_stays_in_its_run_folder(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=4)
    real = optuna.Study.tell

    def tell(self, trial, *args, **kwargs):
        if trial.number == 1:
            raise optuna.exceptions.StorageInternalError("the database went away")
        return real(self, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    _, final = join(config, sd1_host)
    assert final.reason.startswith("stopped: could not record trial 1: StorageInternalError: the database went away")
    assert final.trials in (2, 3)  # stopped at the claim after its write failed
    rows = [json.loads(line) for line in next((tmp_path / "runs" / "shared").glob("*/trials.jsonl")).open()]
    assert 1 in [r["number"] for r in rows if r.get("state") == "COMPLETE"]  # the run folder has it
    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.trials[1].state == optuna.trial.TrialState.RUNNING  # its heartbeat stopped: failed later


def test_a_worker_waits_for_the_studys_last_trials_and_runs_again_one_that_never_beat(sd1_host, tiny_sd1_paths,
                                                                                      tiny_sd1_config_dir, tmp_path):
    """The study is full, but one of its trials runs without ever beating (its worker died
    between making it and its first heartbeat): a worker waits, fails it once it stayed silent
    for three beats, and runs its parameters in its place."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=3, heartbeat_s=1)
    _, final = join(config, sd1_host, trials=2)
    assert final.trials == 2
    silent = optuna.load_study(study_name="shared", storage=storage).ask()  # no heartbeat, ever
    silent._suggest("diffuser.all.alpha", optuna.distributions.FloatDistribution(0.0, 1.0))
    started = time.monotonic()
    _, final = join(config, sd1_host)
    assert final.reason == "completed" and final.trials == 1 and time.monotonic() - started >= 3
    study = optuna.load_study(study_name="shared", storage=storage)
    dead = study.trials[silent.number]
    assert dead.state == optuna.trial.TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("worker died (unknown")
    (retry,) = [t for t in study.trials if t.user_attrs.get(RETRY_ATTR) == silent.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params["diffuser.all.alpha"] == dead.params["diffuser.all.alpha"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 3  # the limit, the retry in it


def test_a_worker_that_runs_something_else_is_refused_with_the_differences(sd1_host, tiny_sd1_paths,
                                                                           tiny_sd1_config_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=1)
    join(config, sd1_host)
    other = worker_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", storage, trials=1)
    other.scorers[0].weight = 2.0
    other.payloads[0].steps = 3
    with pytest.raises(StudyMismatchError) as refused:
        join(other, sd1_host)
    text = str(refused.value)
    assert "cannot join study 'shared'" in text and "scorers" in text and "payloads" in text


def test_a_worker_needs_a_storage_url_and_a_study_name(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs")
    config.optimizer.study = ""
    with pytest.raises(ConfigError) as refused:
        join(config, sd1_host)
    fields = {p.field for p in refused.value.problems}
    assert fields == {"optimizer.storage", "optimizer.study"}
    assert not (tmp_path / "runs").exists()


# --- worker processes on PostgreSQL ----------------------------------------------------------------


# trials long enough (about a second) to be caught running
SLOW = [{"name": "p", "prompt": "a red fox", "seed": 3, "steps": 12, "cfg_scale": 5, "sampler": "Euler",
         "width": TINY_SIZE, "height": TINY_SIZE, "batch_size": 2}]


def _config_file(tmp_path, paths, config_dir, storage, payloads=None, **optimizer) -> Path:
    config = worker_config(paths, config_dir, tmp_path / "runs", storage, **optimizer)
    if payloads is not None:
        config = make_config(paths, config_dir, tmp_path / "runs", payloads=payloads,
                             optimizer=dataclasses.asdict(config.optimizer))
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return path


def _worker(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sd_optim", "worker", str(config), "--json", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(worker: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _rows(run_root: Path, study: str) -> list[dict]:
    rows = []
    for path in sorted(run_root.glob(f"{study}/*/trials.jsonl")):
        rows += [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    return [r for r in rows if r.get("kind") != "reference"]


def test_three_workers_run_exactly_the_studys_trials(postgres_url, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    """Three worker processes, 12 trials each at most, on a study of 30: exactly 30 trials, each
    claimed by one worker, every worker contributing."""
    config = _config_file(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, postgres_url, trials=30, study="three")
    workers = [_worker(config, "--trials", "12") for _ in range(3)]
    results = [_finish(w) for w in workers]
    assert all(r["reason"] == "completed" for r in results)
    assert sum(r["trials"] for r in results) == 30
    study = optuna.load_study(study_name="three", storage=postgres_url)
    assert len(study.trials) == 30 and all(t.state in FINISHED for t in study.trials)
    pids = {t.user_attrs[WORKER_ATTR]["pid"] for t in study.trials}
    assert pids == {w.pid for w in workers}
    rows = _rows(tmp_path / "runs", "three")
    assert sorted(r["number"] for r in rows) == list(range(30))  # no trial run twice
    # the best trial's recipe from a machine that has only the database
    out = export_trial(tmp_path / "elsewhere", "three", trial=None, out=tmp_path / "best.mecha", storage=postgres_url)
    best = study.best_trial
    assert out.read_text(encoding="utf-8") == recipe_text(make_planner(
        config_from_dict(study.user_attrs["sd_optim.config"]), "sd1-ldm").recipe(best.params))
    assert "storage" not in study.user_attrs["sd_optim.config"]["optimizer"]  # nor its password


def _running_trial_of(storage: optuna.storages.RDBStorage, pid: int) -> int | None:
    try:
        study = optuna.load_study(study_name="killed", storage=storage)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(WORKER_ATTR, {}).get("pid") == pid:
            return t.number
    return None


def _kill_mid_trial(worker: subprocess.Popen, storage: optuna.storages.RDBStorage, timeout: float = 120) -> int:
    """SIGKILL ``worker`` while it runs a trial (frozen first, so the trial is surely its); the
    trial's number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        if _running_trial_of(storage, worker.pid) is not None:
            os.kill(worker.pid, signal.SIGSTOP)
            number = _running_trial_of(storage, worker.pid)
            if number is not None:
                os.kill(worker.pid, signal.SIGKILL)
                worker.communicate()
                return number
            os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker never ran a trial")


def test_a_killed_workers_trial_is_failed_and_run_again_by_another(postgres_url, tiny_sd1_paths,
                                                                    tiny_sd1_config_dir, tmp_path):
    config = _config_file(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, postgres_url, trials=6, heartbeat_s=1,
                          payloads=SLOW, study="killed")
    doomed = _worker(config)
    killed = _kill_mid_trial(doomed, optuna.storages.RDBStorage(postgres_url))  # one pool for the polls
    result = _finish(_worker(config))
    assert result["reason"] == "completed"
    study = optuna.load_study(study_name="killed", storage=postgres_url)
    assert all(t.state in FINISHED for t in study.trials)  # the survivor waited for the dead ones
    # the dead worker's trials (the one it ran, and the one it had claimed ahead) failed, each
    # run again by the survivor in its place: the study's 6 besides them
    # (the one claimed ahead may have been killed before it named its worker)
    dead = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed in [t.number for t in dead] and 1 <= len(dead) <= 2
    assert len(study.trials) == 6 + len(dead)
    for t in dead:
        assert t.user_attrs["fail_reason"].startswith("worker died (") and "no heartbeat for 3 s" in t.user_attrs["fail_reason"]
        assert t.user_attrs.get(WORKER_ATTR, {"pid": doomed.pid})["pid"] == doomed.pid
        retried = [r for r in study.trials if r.user_attrs.get(RETRY_ATTR) == t.number]
        assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
        assert retried[0].user_attrs[WORKER_ATTR]["pid"] != doomed.pid
        # its parameters again (the one claimed ahead may have been killed before it had them all)
        assert all(retried[0].params[k] == v for k, v in t.params.items())


def test_the_shared_workers_benchmark_runs(postgres_url, tmp_path):
    """bench/shared_workers.py end to end on a few trials with one worker (the figures are the README's)."""
    bench = ROOT / "bench" / "shared_workers.py"
    done = subprocess.run([sys.executable, str(bench), "--trials", "3", "--workers", "1", "--storage", postgres_url],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    assert result["trials"] == 3 and result["workers_seen"] == 1 and result["trials_per_min"] > 0
    assert 0 <= result["wait_share"] < 1 and result["work_cpu_ms_per_trial"] > 0
    assert "feed thread: _claim" in result["wall_ms_per_trial_by_call"]
