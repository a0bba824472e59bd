"""Trials per minute of one shared study run by 1, 2 and 3 worker processes on PostgreSQL, and the
share of a trial its worker waits on the database.

    .venv/bin/python bench/shared_workers.py [--trials 60] [--workers 1,2,3] [--storage URL]

The demo's set-up (tiny SD1 models, two prompt sets, the reference scorer, TPE): for each worker
count, a new study of ``--trials`` trials run by that many ``python -m sd_optim worker`` processes
at once. Without ``--storage`` a throw-away PostgreSQL server is started from Debian's package
(tests/pg_server.py) and stopped at the end. Reported per worker count:

- trials per minute: the study's trials over the time from its first trial's start to its last
  trial's end (the workers' start-up, loading torch and the models, is left out);
- waiting on the database: the seconds the workers' trial loops waited for Optuna's database
  calls, the study's claim lock, or a claim or write of their feed (sd_optim/run/feed.py) not
  done yet, over the seconds their trials took (the ``seconds`` each trial records). A worker's
  first claim (nothing was claimed ahead of it; the sampler's first use warms up) is reported
  apart, once per worker, like its start-up;
- database work: the seconds Optuna's database calls took on any thread (most on the feed's,
  beside the trials; the wall time, and the worker's CPU time in them), over the same; the
  heartbeat thread's calls are left out. Each worker is run through this file's
  ``--timed-worker`` mode, which times them.

The last line of stdout is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


# --- one worker, its database time measured ------------------------------------------------------


def timed_worker(config: str, out: str) -> int:
    """``python -m sd_optim worker CONFIG`` with its database calls timed into ``out``: on the
    trial loop's thread (what the loop waits for: a call, the study's lock, a claim or a write of
    the feed not done yet) and on any thread but the heartbeat's (the database work)."""
    import optuna

    from sd_optim import cli
    from sd_optim.run import feed, shared

    totals = {"wait_s": 0.0, "first_claim_s": 0.0, "work_s": 0.0, "work_cpu_s": 0.0, "methods": {}, "counts": {}, "waits": {}}
    depth = threading.local()
    main = threading.main_thread()

    looping = threading.Event()  # the trial loop has begun (the set-up's calls are not a trial's)

    def timed(fn, database: bool):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            thread = threading.current_thread()
            first = fn.__name__ == "take" and not looping.is_set()  # the worker's first claim: not ahead
            if fn.__name__ == "take":
                looping.set()
            level = "db" if database else "feed"  # the outermost call of each kind is timed
            if getattr(depth, level, 0) or thread.name == "sd-optim-heartbeat" or not looping.is_set():
                return fn(*args, **kwargs)
            setattr(depth, level, 1)
            t0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(depth, level, 0)
                spent, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
                where = "first take" if first else fn.__name__ if thread is main else f"feed thread: {fn.__name__}"
                totals["waits"][where] = totals["waits"].get(where, 0.0) + spent
                if first:
                    totals["first_claim_s"] += spent
                elif thread is main and not getattr(depth, "feed", 0):
                    totals["wait_s"] += spent
                if database:
                    totals["work_s"] += spent
                    totals["work_cpu_s"] += cpu
                    totals["methods"][fn.__name__] = totals["methods"].get(fn.__name__, 0.0) + cpu
                    totals["counts"][fn.__name__] = totals["counts"].get(fn.__name__, 0) + 1
        return wrapper

    cls = optuna.storages.RDBStorage
    for name in [n for n, v in vars(cls).items() if not n.startswith("__") and inspect.isfunction(v)]:
        setattr(cls, name, timed(vars(cls)[name], database=True))
    shared.StudyLock.__enter__ = timed(shared.StudyLock.__enter__, database=True)
    for name in ("take", "flush", "settle", "hand_back", "_claim", "_write"):
        setattr(feed.TrialFeed, name, timed(getattr(feed.TrialFeed, name), database=False))
    atexit.register(lambda: Path(out).write_text(json.dumps(totals), encoding="utf-8"))
    return cli.main(["worker", config, "--json"])


# --- the benchmark ---------------------------------------------------------------------------------


def study_figures(storage: str, study: str) -> dict[str, float]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).trials
    done = [t for t in trials if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    span = (last - first).total_seconds()
    busy = sum(sum(t.user_attrs["seconds"].values()) for t in done)  # the trial loop's, from ask to tell
    return {"trials": len(done), "span_s": span, "trial_s": busy,
            "workers_seen": len({t.user_attrs.get("sd_optim.worker", {}).get("pid") for t in done})}


def run_workers(folder: Path, data: dict, storage: str, n: int, trials: int) -> dict[str, float]:
    import yaml

    study = f"bench-{n}-workers"
    data = {**data, "optimizer": {**data["optimizer"], "study": study, "storage": storage, "trials": trials}}
    config = folder / f"{study}.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    outs = [folder / f"{study}-{i}.json" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, __file__, "--timed-worker", str(config), str(out)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out in outs]
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
    timed = [json.loads(o.read_text(encoding="utf-8")) for o in outs]
    fig = study_figures(storage, study)
    methods, counts, waits = (_summed(timed, k) for k in ("methods", "counts", "waits"))
    wait, work, cpu = (sum(t[k] for t in timed) for k in ("wait_s", "work_s", "work_cpu_s"))
    return {"workers": n, "trials": fig["trials"], "workers_seen": fig["workers_seen"],
            "trials_per_min": 60 * fig["trials"] / fig["span_s"],
            "trial_ms": 1e3 * fig["trial_s"] / fig["trials"],
            "wait_ms_per_trial": 1e3 * wait / fig["trials"], "wait_share": wait / fig["trial_s"],
            "first_claim_ms": 1e3 * sum(t["first_claim_s"] for t in timed) / n,
            "work_ms_per_trial": 1e3 * work / fig["trials"], "work_share": work / fig["trial_s"],
            "wall_ms_per_trial_by_call": {k: round(1e3 * v / fig["trials"], 2) for k, v in waits.items()},
            "work_cpu_ms_per_trial": 1e3 * cpu / fig["trials"], "work_cpu_share": cpu / fig["trial_s"],
            "work_cpu_ms_per_trial_by_call": {k: [round(1e3 * v / fig["trials"], 2), round(counts[k] / fig["trials"], 2)]
                                          for k, v in sorted(methods.items(), key=lambda kv: -kv[1])}}


def _summed(timed: list[dict], key: str) -> dict[str, float]:
    """The workers' ``key`` dicts (by call name) added up."""
    out: dict[str, float] = {}
    for t in timed:
        for name, v in t[key].items():
            out[name] = out.get(name, 0) + v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throw-away server)")
    args = parser.parse_args()

    from pg_server import PostgresServer, pg_bin

    from sd_optim.config import config_from_dict
    from sd_optim.demo import demo_data, ensure_references

    folder = Path(tempfile.mkdtemp(prefix="sd-optim-bench-workers-"))
    data = demo_data(folder, args.trials, "bench")
    ensure_references(config_from_dict(data, base_dir=folder), folder)
    data["output_dir"] = str(folder / "runs")
    server = None
    storage = args.storage
    if not storage:
        bin_dir = pg_bin()
        if bin_dir is None:
            raise SystemExit("PostgreSQL is not installed: bash tools/ensure-postgres.sh, or pass --storage URL")
        server = PostgresServer(bin_dir)
        storage = server.start()
    try:
        results = [run_workers(folder, data, storage, int(n), args.trials) for n in args.workers.split(",")]
    finally:
        if server is not None:
            server.stop()
    base = results[0]["trials_per_min"]
    for r in results:
        print(f"{r['workers']} worker(s)  {r['trials_per_min']:6.1f} trials/min ({r['trials_per_min'] / base:.2f}x)  "
              f"trial {r['trial_ms']:6.0f} ms  waiting on the database {r['wait_ms_per_trial']:5.1f} ms "
              f"({100 * r['wait_share']:.1f} %; a worker's first claim {r['first_claim_ms']:.0f} ms)  database work {r['work_ms_per_trial']:5.1f} ms, "
              f"of its CPU {r['work_cpu_ms_per_trial']:5.1f} ms ({100 * r['work_cpu_share']:.1f} %)  "
              f"workers seen {r['workers_seen']}")
    print(json.dumps({"trials": args.trials, "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--timed-worker":
        sys.exit(timed_worker(sys.argv[2], sys.argv[3]))
    main()
