"""Trials per minute of one shared study run by 1, 2 and 3 worker processes on PostgreSQL, and the
share of a trial its worker spends in the database.

    .venv/bin/python bench/shared_workers.py [--trials 24] [--workers 1,2,3] [--storage URL]

The demo's set-up (tiny SD1 models, two prompt sets, the reference scorer, TPE): for each worker
count, a new study of ``--trials`` trials run by that many ``python -m sd_optim worker`` processes
at once. Without ``--storage`` a throw-away PostgreSQL server is started from Debian's package
(tests/pg_server.py) and stopped at the end. Reported per worker count:

- trials per minute: the study's trials over the time from its first trial's start to its last
  trial's end (the workers' start-up, loading torch and the models, is left out);
- database share: the seconds the workers' trial loops spent in Optuna's database calls (and
  waiting for the study's claim lock), over the seconds their trials took. Each worker is run
  through this file's ``--timed-worker`` mode, which times ``RDBStorage``'s methods (the
  heartbeat thread's calls excluded: they run beside the trial).

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
    """``python -m sd_optim worker CONFIG`` with Optuna's database calls timed into ``out``."""
    import optuna

    from sd_optim import cli
    from sd_optim.run import shared

    totals = {"storage_s": 0.0, "lock_s": 0.0, "calls": 0, "methods": {}}
    depth = threading.local()
    main = threading.main_thread()

    def timed(fn, key):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if threading.current_thread() is not main or getattr(depth, "n", 0):
                return fn(*args, **kwargs)
            depth.n = 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth.n = 0
                spent = time.perf_counter() - t0
                totals[key] += spent
                totals["calls"] += 1
                totals["methods"][fn.__name__] = totals["methods"].get(fn.__name__, 0.0) + spent
        return wrapper

    cls = optuna.storages.RDBStorage
    for name in [n for n, v in vars(cls).items() if not n.startswith("__") and inspect.isfunction(v)]:
        setattr(cls, name, timed(vars(cls)[name], "storage_s"))
    shared.StudyLock.__enter__ = timed(shared.StudyLock.__enter__, "lock_s")
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
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
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
    db = sum(t["storage_s"] + t["lock_s"] for t in timed)
    return {"workers": n, "trials": fig["trials"], "workers_seen": fig["workers_seen"],
            "trials_per_min": 60 * fig["trials"] / fig["span_s"],
            "trial_ms": 1e3 * fig["trial_s"] / fig["trials"],
            "db_ms_per_trial": 1e3 * db / fig["trials"],
            "lock_wait_ms_per_trial": 1e3 * sum(t["lock_s"] for t in timed) / fig["trials"],
            "db_share": db / fig["trial_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
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
              f"trial {r['trial_ms']:6.0f} ms  database {r['db_ms_per_trial']:5.1f} ms "
              f"({100 * r['db_share']:.1f} %, lock wait {r['lock_wait_ms_per_trial']:.1f} ms)  "
              f"workers seen {r['workers_seen']}")
    print(json.dumps({"trials": args.trials, "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--timed-worker":
        sys.exit(timed_worker(sys.argv[2], sys.argv[3]))
    main()
