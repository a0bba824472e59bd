"""What a demo trial spends outside merging, generating and scoring, with the run's study kept in
memory and written behind the trials (the default for a run's own study.db) against the same
study written directly to SQLite as Optuna writes it (what a storage URL gets).

    .venv/bin/python bench/trial_overhead.py [--trials 30] [--repeats 2]

Runs the demo's set-up (tiny SD1 models, two prompt sets, the reference scorer, TPE) once per
mode and repetition, interleaved, with one host. For each run: the loop's wall time from the
first trial's ask to the run's end, the trials' merge / generate / score seconds, and the rest
(wall time less those three: the optimizer, the study's storage, the run folder's writes), as a
share of the trial. The last line is a JSON object with both modes and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sd_optim.config import config_from_dict
from sd_optim.demo import demo_data, ensure_references
from sd_optim.hosts.standalone import make_host
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, run_to_end

MODES = ("buffered", "direct")
PARTS = ("suggest", "merge", "generate", "score")


def one_run(folder: Path, host, trials: int, mode: str, n: int) -> dict[str, float]:
    data = demo_data(folder, trials, f"{mode}-{n}")
    if mode == "direct":  # a storage URL: every write goes to the database as Optuna makes it
        data["optimizer"]["storage"] = f"sqlite:///{folder / f'{mode}-{n}.db'}"
    config = config_from_dict(data, base_dir=folder)
    marks: dict[str, float] = {}
    parts = dict.fromkeys(PARTS, 0.0)

    def watch(event) -> None:
        if isinstance(event, ev.TrialStarted) and "start" not in marks:
            marks["start"] = time.perf_counter()
        elif isinstance(event, ev.TrialFinished):
            marks.setdefault("first_suggest", event.timings.get("suggest", 0.0))
            for k in PARTS:
                parts[k] += event.timings.get(k, 0.0)

    final = run_to_end(Runner(config, host), watch)
    # the first trial's suggestion came before its TrialStarted: the wall starts where it did
    wall = time.perf_counter() - marks["start"] + marks["first_suggest"]
    assert final.trials == trials and final.reason == "completed", final
    rest = wall - sum(parts.values())
    return {"trial_ms": 1e3 * wall / trials, **{f"{k}_ms": 1e3 * v / trials for k, v in parts.items()},
            "rest_ms": 1e3 * rest / trials, "rest_share": rest / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp(prefix="sd-optim-bench-trials-"))
    config = config_from_dict(demo_data(folder, args.trials, "warm-up"), base_dir=folder)
    host = make_host(config)
    ensure_references(config, folder, host)
    run_to_end(Runner(config, host))  # loads the models, warms the caches
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for n in range(args.repeats):
        for mode in MODES:
            results[mode].append(one_run(folder, host, args.trials, mode, n))
    summary = {m: {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
               for m, runs in results.items()}
    for m, s in summary.items():
        print(f"{m:9s} trial {s['trial_ms']:7.1f} ms  suggest {s['suggest_ms']:5.1f}  merge {s['merge_ms']:6.1f}  "
              f"generate {s['generate_ms']:6.1f}  score {s['score_ms']:5.1f}  rest {s['rest_ms']:6.1f} ms "
              f"({100 * s['rest_share']:.1f} %)")
    ratio = summary["direct"]["trial_ms"] / summary["buffered"]["trial_ms"]
    print(f"direct / buffered trial time: {ratio:.2f}x")
    print(json.dumps({"trials": args.trials, "repeats": args.repeats, "cpus": os.cpu_count(), **summary,
                      "direct_over_buffered": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
