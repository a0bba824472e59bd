"""``python -m sd_optim``: run, demo, studies, export."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import optuna

from . import demo
from .config import config_from_dict, load_config
from .errors import ConfigError, Problem, StudyMismatchError
from .hosts.standalone import make_host
from .run import events as ev
from .run.exporting import export_trial
from .run.runner import RunControl, Runner, RunOptions
from .run.study import existing_studies, read_studies, storage_url
from .scoring import ScorerError
from .scoring.bench import bench_scorers, bench_text
from .scoring.download import download_scorer
from .scoring.files import DEFAULT_MODELS_DIR
from .scoring.inventory import inventory, inventory_text

DEFAULT_DIR = "runs"  # studies / export: the output folder when neither --dir nor --config is given


class _Progress:
    """A progress bar on stderr fed by the runner's events."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event: ev.Event) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if isinstance(event, ev.RunStarted):
            self.bar = tqdm(total=event.trials, desc=event.study, unit="trial", file=sys.stderr)
        elif isinstance(event, ev.TrialFinished) and self.bar is not None:
            self.bar.update(1)
            value = "failed" if event.value is None else f"{event.value:.4f}"
            if event.objectives:  # several: each one's, then their mean
                value = " · ".join(f"{k} {v:.4f}" for k, v in event.objectives.items()) + f" · mean {value}"
            self.bar.set_postfix_str(f"trial {event.number}: {value}")
            if event.state == "FAIL":
                self.bar.write(f"trial {event.number} failed: {event.reason}")
            elif event.state == "PRUNED":
                self.bar.write(f"trial {event.number} {event.reason}")
        elif isinstance(event, ev.NewBest) and self.bar is not None:
            self.bar.write(f"new best: trial {event.number} = {event.value:.4f}")  # several objectives: their mean
        elif isinstance(event, ev.SamplerHandedOver) and self.bar is not None:
            self.bar.write(event.note)
        elif isinstance(event, ev.ConfirmationStarted) and self.bar is not None:
            self.bar.write(f"confirming trials {', '.join(map(str, event.trials))} on fresh seeds")
        elif isinstance(event, ev.ConfirmationFinished) and self.bar is not None and event.winner is None:
            self.bar.write(f"the confirmation stage ended without a winner: {event.note}")
        elif isinstance(event, ev.TrialConfirmed) and self.bar is not None:
            self.bar.write(f"trial {event.number}: {event.value:.4f}, on fresh seeds {event.fresh_value:.4f}, "
                           f"both {event.combined:.4f}")
        elif isinstance(event, ev.CoarseFinished) and self.bar is not None:
            self.bar.close()
            best = "no completed trial" if event.best_trial is None else \
                f"best trial {event.best_trial} = {event.best_value:.4f}"
            print(f"coarse stage {event.study} ({event.reason}): {best}; the guide's space starts from it",
                  file=sys.stderr)
        elif isinstance(event, (ev.RunFinished, ev.RunFailed)) and self.bar is not None:
            self.bar.close()


def execute_run(config, *, trials=None, resume="", fork="", json_out=False, host=None,
                join=False) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar reports trials
    host = host or make_host(config)
    control = RunControl()
    options = RunOptions(resume=resume, fork=fork, trials=trials, join=join, worker_kind="cli" if join else "")
    runner = Runner(config, host, options, control)
    previous = signal.getsignal(signal.SIGINT)
    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGINT, _ctrl_c_handler(control))
    progress = _Progress(enabled=sys.stderr.isatty() or not json_out)
    final = None
    try:
        for event in runner.events():
            progress(event)
            final = event
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    assert isinstance(final, ev.RunFinished)
    return {
        "study": final.study, "trials": final.trials, "reason": final.reason,
        "best_trial": final.best_trial, "best_value": final.best_value,
        "best_params": final.best_params, "best_recipe": final.best_recipe,
        "run_dir": final.run_dir, "completed": final.completed, "pruned": final.pruned,
        "failure": final.failure, "confirmed_trial": final.confirmed_trial, "confirmed_value": final.confirmed_value,
        "sampler_note": final.sampler_note, "pareto": final.pareto, "coarse_study": final.coarse_study,
    }


def _ctrl_c_handler(control):
    """First Ctrl-C: stop at the next image boundary. Second: stop at once (a KeyboardInterrupt
    where the run is; the runner still restores the model and prints the summary). Later ones, and
    any while the original weights are being put back, only say to wait."""
    presses = 0

    def on_sigint(signum, frame):
        nonlocal presses
        presses += 1
        if presses == 1:
            control.stop("stopped")
            print("stopping after the current image (Ctrl-C again to stop at once)", file=sys.stderr)
        elif presses == 2 and not control.restoring:
            control.stop("stopped at once (Ctrl-C twice)")
            raise KeyboardInterrupt
        else:
            print("restoring the original weights; wait a moment", file=sys.stderr)

    return on_sigint


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _print_result(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print(json.dumps(result, default=str))
        return
    print(f"study {result['study']}: {result['trials']} trials this run ({result.get('reason', '')})")
    if result["best_trial"] is None:
        print("no trial completed")
    else:
        print(f"best trial {result['best_trial']}: {result['best_value']:.6f}")
        for k, v in result["best_params"].items():
            print(f"  {k} = {v:.6g}" if isinstance(v, float) else f"  {k} = {v}")
        if result.get("confirmed_trial") is not None:
            print(f"confirmed on fresh seeds: trial {result['confirmed_trial']} "
                  f"(mean of both seeds {result['confirmed_value']:.6f}); best.mecha is its recipe")
        if result.get("pareto"):
            _print_pareto(result)
        print(f"best recipe: {result['best_recipe']}")
    if result.get("coarse_study"):
        print(f"coarse stage: study {result['coarse_study']} (this study started from its best)")
    print(f"run folder: {result['run_dir']}")


def _print_pareto(result: dict[str, Any]) -> None:
    """Several objectives: the best trial above is the balanced pick; the front to choose from."""
    print(f"Pareto front ({len(result['pareto'])} trials; best above is the balanced pick, the highest mean; "
          f"take another with: export {result['study']} --trial N --out FILE):")
    for p in sorted(result["pareto"], key=lambda p: -p["value"]):
        values = ", ".join(f"{k} {v:.4f}" for k, v in p["objectives"].items())
        print(f"  trial {p['trial']}: {values} (mean {p['value']:.4f})")


def cmd_run(args) -> int:
    config = load_config(args.config)
    if args.study and args.resume:
        raise ConfigError([Problem("--study", f"names a new study; --resume continues {args.resume!r}")])
    if args.study:
        config.optimizer.study = args.study
    if args.fork and config.optimizer.study == args.fork:
        raise ConfigError([Problem("--fork", f"the new study needs a name other than {args.fork!r} "
                                             "(optimizer.study); pass --study NEW_NAME")])
    result = execute_run(config, trials=args.trials, resume=args.resume or "", fork=args.fork or "",
                         json_out=args.json)
    _print_result(result, args.json)
    if result["failure"]:
        print(f"error: {result['failure']}", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args) -> int:
    """A worker of a shared study: creates it when it is the first, joins it otherwise."""
    config = load_config(args.config)
    if args.storage:
        config.optimizer.storage = args.storage
    if args.study:
        config.optimizer.study = args.study
    result = execute_run(config, trials=args.trials, json_out=args.json, join=True)
    _print_result(result, args.json)
    if result["failure"]:
        print(f"error: {result['failure']}", file=sys.stderr)
        return 1
    return 0


def run_demo(trials: int = 16, folder: Path | None = None, json_out: bool = False) -> dict[str, Any]:
    """The demo: tiny models, references of a hidden blend, and a real run that looks for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, study = demo.demo_folder(folder)
    config = config_from_dict(demo.demo_data(folder, trials, study))
    host = make_host(config)
    demo.ensure_references(config, folder, host)
    result = execute_run(config, json_out=json_out, host=host)
    result["hidden_params"] = demo.HIDDEN
    return result


def cmd_demo(args) -> int:
    result = run_demo(trials=args.trials, folder=Path(args.out) if args.out else None,
                      json_out=args.json)
    _print_result(result, args.json)
    if not args.json:
        hidden = ", ".join(f"{k} = {v}" for k, v in result["hidden_params"].items())
        print(f"the references were rendered from the hidden blend: {hidden}")
    return 0


def cmd_app(args) -> int:
    from .ui.app import serve  # lazily: the other commands need no gradio

    if args.models_dir and not Path(args.models_dir).expanduser().is_dir():
        raise ConfigError([Problem("--models-dir", "no such folder", args.models_dir)])
    demo_folder = args.out
    output_dir = args.output_dir or (str(Path(demo_folder) / "runs") if demo_folder else "runs")
    if args.demo and not demo_folder:
        demo_folder = tempfile.mkdtemp(prefix="sd-optim-app-demo-")
        output_dir = args.output_dir or str(Path(demo_folder) / "runs")
    serve(host=args.host, port=args.port, models_dir=args.models_dir, output_dir=output_dir,
          demo=args.demo, demo_folder=demo_folder, scorer_models=str(Path(args.scorer_models_dir).expanduser().absolute()))
    return 0


def _output_dir(args) -> Path:
    if args.config and args.dir is not None:
        raise ConfigError([Problem("--dir", "cannot be combined with --config (which takes the output "
                                            f"folder from {args.config!r}); give one of them", args.dir)])
    if args.config:
        c = load_config(args.config)
        return c.resolve_path(c.output_dir)
    return Path(args.dir or DEFAULT_DIR)


def cmd_studies(args) -> int:
    out = _output_dir(args)
    rows = []
    if args.storage:
        found = [(args.storage, read_studies(args.storage, "--storage"))]
    else:
        found = [(url, existing_studies(url)) for url in (
            storage_url("", d) for d in sorted(out.iterdir()) if (d / "study.db").exists()
        )] if out.is_dir() else []
    for storage, summaries in found:
        for s in summaries:
            best = s.best_trial.value if s.best_trial is not None else None
            rows.append({"study": s.study_name, "trials": s.n_trials, "best_value": best,
                         "best_trial": s.best_trial.number if s.best_trial else None,
                         "objectives": len(s.directions), "storage": storage})
    if args.json:
        print(json.dumps({"studies": rows}))
    elif not rows:
        print(f"no studies in {out}")
    else:
        for r in rows:
            best = "-" if r["best_value"] is None else f"{r['best_value']:.6f} (trial {r['best_trial']})"
            if r["objectives"] > 1:  # Optuna's summary has no single best then
                best = f"- ({r['objectives']} objectives: a Pareto front)"
            print(f"{r['study']}: {r['trials']} trials, best {best}")
    return 0


def cmd_scorers(args) -> int:
    """List the scorers and their files, or download the files of the scorers named."""
    if args.action == "download":
        if not args.names:
            raise ConfigError([Problem("scorers download", "name at least one scorer, e.g. laion_aesthetic")])
        placed = {}
        for name in args.names:
            paths = download_scorer(name, args.models_dir, progress=None if args.json else _print_progress)
            placed[name] = [str(p) for p in paths]
            if not args.json:
                print(f"{name}: " + (", ".join(placed[name]) if paths else "needs no files"))
        if args.json:
            print(json.dumps({"downloaded": placed}))
        return 0
    entries = inventory(args.models_dir)
    if args.json:
        print(json.dumps(entries))
    else:
        print(f"scorer models folder: {Path(args.models_dir).expanduser().absolute()}")
        print("\n".join(inventory_text(entries)))
    return 0


def cmd_bench(args) -> int:
    if args.what == "merge":
        return _bench_merge(args)
    if args.what == "optimizer":
        return _bench_optimizer(args)
    names = [n.strip() for n in (args.scorers or "").split(",") if n.strip()] or None
    result = bench_scorers(args.device, args.models_dir, names, repeats=args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(bench_text(result)))
    return 0


def _bench_merge(args) -> int:
    from .merging.bench import bench_merge, bench_merge_text, some_keys

    keys = some_keys(args.config, args.keys) if args.keys else None
    result = bench_merge(args.config, args.device, repeats=args.repeats, keys=keys, ties=args.ties)
    print("\n".join(bench_merge_text(result)))
    if args.json:
        print(json.dumps(result))
    return 0


def _bench_optimizer(args) -> int:
    from .run.optimizer_bench import SAMPLERS, bench_optimizer, bench_optimizer_text

    names = [n.strip() for n in (args.samplers or "").split(",") if n.strip()] or None
    unknown = sorted(set(names or []) - set(SAMPLERS))
    if unknown:
        print(f"--samplers: unknown {', '.join(unknown)} (known: {', '.join(SAMPLERS)})", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study it creates
    result = bench_optimizer(args.trials, args.seeds, names)
    print("\n".join(bench_optimizer_text(result)))
    if args.json:
        print(json.dumps(result))
    return 0


def _print_progress(name: str, done: int, total: int | None) -> None:
    shown = f"{done / total:6.1%}" if total else f"{done / 1e6:.1f} MB"
    end = "\n" if total and done >= total else "\r"
    print(f"  {name}: {shown}", end=end, file=sys.stderr, flush=True)


def cmd_export(args) -> int:
    out = Path(args.out)
    _check_writable(out)
    try:
        path = export_trial(_output_dir(args), args.study, trial=args.trial, out=out,
                            storage=args.storage or "")
    except OSError as e:
        if isinstance(e, FileExistsError) or not _about(e, out):
            raise
        raise ConfigError([Problem("--out", f"cannot write {str(out)!r}: {e.strerror or e}")]) from None
    if args.json:
        print(json.dumps({"out": str(path)}))
    else:
        print(f"wrote {path}")
    return 0


def cmd_import_config(args) -> int:
    from .import_old import import_setup, read_payloads, read_yaml, write_config

    out = Path(args.out)
    _check_writable(out)
    old = read_yaml(Path(args.old_config), "old_config")
    guide = read_yaml(Path(args.guide), "--guide") if args.guide else None
    payloads = read_payloads(Path(args.payloads)) if args.payloads else []
    imported = import_setup(old, guide, payloads, Path(args.old_config).parent)
    config_from_dict(imported.data, base_dir=out.parent)  # what it wrote must load: problems exit 2, nothing written
    write_config(imported.data, out)
    if args.json:
        print(json.dumps({"out": str(out), "not_carried_over": [{"field": f, "why": w} for f, w in imported.dropped]}))
        return 0
    print(f"wrote {out}")
    if imported.dropped:
        print("not carried over:")
        for where, why in imported.dropped:
            print(f"  {where}: {why}")
    return 0


def _check_writable(out: Path) -> None:
    """--out's folder exists or can be made, and is writable: refused before anything is read."""
    parent = out.parent.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError([Problem("--out", f"cannot write {str(out)!r}: {str(parent)!r} is a file, not a "
                                            "folder")])
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError([Problem("--out", f"cannot write {str(out)!r}: no write permission in "
                                            f"{str(parent)!r}")])


def _about(error: OSError, out: Path) -> bool:
    """Whether an OSError concerns --out (or its folder), not an input the export reads."""
    name = getattr(error, "filename", None)
    if not name:
        return False
    target = Path(name).absolute()
    return target == out.absolute() or target.parent == out.parent.absolute() or target in out.absolute().parents


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sd_optim",
                                description="Find the best merge of Stable Diffusion checkpoints.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an optimization from a YAML config")
    r.add_argument("config")
    r.add_argument("--trials", type=_positive_int, help="trials to run now (default: optimizer.trials)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", metavar="NAME", help="continue the study NAME")
    g.add_argument("--fork", metavar="NAME", help="new study seeded with NAME's parameter sets")
    r.add_argument("--study", metavar="NAME", help="name of the new study (default: optimizer.study)")
    r.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    r.set_defaults(fn=cmd_run)

    w = sub.add_parser("worker", help="run trials of a study shared through a database with other workers")
    w.add_argument("config")
    w.add_argument("--storage", metavar="URL", help="the study's database (default: optimizer.storage), "
                                                   "e.g. postgresql://user:password@host/db")
    w.add_argument("--study", metavar="NAME", help="the shared study (default: optimizer.study)")
    w.add_argument("--trials", type=_positive_int, help="trials this worker runs at most (the study stops "
                                                        "at optimizer.trials in all)")
    w.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    w.set_defaults(fn=cmd_worker)

    d = sub.add_parser("demo", help="a real optimization on tiny generated models")
    d.add_argument("--trials", type=_positive_int, default=16)
    d.add_argument("--out", help="folder for the models and the run (default: a temp folder)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_demo)

    a = sub.add_parser("app", help="the Optimize Merge tab in a browser, without a WebUI")
    a.add_argument("--demo", action="store_true",
                   help="tiny generated models and a ready set-up: press Start")
    a.add_argument("--models-dir", metavar="DIR", help="the checkpoints to offer (.safetensors, searched "
                   "recursively)")
    a.add_argument("--output-dir", metavar="DIR", help="the run folders (default: runs, or OUT/runs)")
    a.add_argument("--out", metavar="DIR", help="--demo: folder for its models and runs (default: a temp folder)")
    a.add_argument("--scorer-models-dir", default=DEFAULT_MODELS_DIR, metavar="DIR",
                   help=f"where scorer weights are looked for and downloaded to (default: {DEFAULT_MODELS_DIR})")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    a.add_argument("--port", type=int, default=7861, help="port (default: 7861)")
    a.set_defaults(fn=cmd_app)

    sc = sub.add_parser("scorers", help="list the scorers and their weight files; 'download NAME…' fetches them")
    sc.add_argument("action", nargs="?", choices=["download"], help="download: fetch the files of the scorers named")
    sc.add_argument("names", nargs="*", metavar="NAME", help="scorers to download (e.g. laion_aesthetic)")
    sc.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, metavar="DIR",
                    help=f"the scorer models folder (default: {DEFAULT_MODELS_DIR})")
    sc.add_argument("--json", action="store_true", help="last stdout line is JSON")
    sc.set_defaults(fn=cmd_scorers)

    b = sub.add_parser("bench", help="time the scorers (load, per image at batch 1 and 8, a shared backbone), "
                                     "the merge engine (against a plain lerp loop and sd_mecha.merge), or "
                                     "compare the samplers on a merge whose optimum is known (optimizer)")
    b.add_argument("what", choices=["scorers", "merge", "optimizer"])
    b.add_argument("--trials", type=_positive_int, default=100, help="optimizer: trials per study (default: 100)")
    b.add_argument("--seeds", type=_positive_int, default=4, help="optimizer: studies per sampler (default: 4)")
    b.add_argument("--samplers", metavar="A,B",
                   help="optimizer: only these (random, tpe, cmaes, gp, tpe-10, gp-10, default, default+median, "
                        "default+confirm; regret needs random)")
    b.add_argument("--config", default="sd1-ldm", choices=["sd1-ldm", "sdxl-sgm"],
                   help="merge: the model config whose keys and shapes the random weights take (default: sd1-ldm)")
    b.add_argument("--keys", type=_positive_int, metavar="N",
                   help="merge: about N of the keys only, a quick check (the figures need every key)")
    b.add_argument("--ties", action="store_true",
                   help="merge: also TIES (off the fast path) through the engine and through sd_mecha.merge")
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    b.add_argument("--models-dir", metavar="DIR", help="time the real files there (default: tiny random weights)")
    b.add_argument("--scorers", metavar="A,B", help="only these scorers")
    b.add_argument("--repeats", type=_positive_int, default=3, help="timings per figure, the median kept")
    b.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    b.set_defaults(fn=cmd_bench)

    for name, fn, helptext in (("studies", cmd_studies, "list the studies in the output folder"),
                               ("export", cmd_export, "export a trial as .mecha or .safetensors")):
        s = sub.add_parser(name, help=helptext)
        if name == "export":
            s.add_argument("study")
            s.add_argument("--trial", type=int, help="trial number (default: the best)")
            s.add_argument("--out", required=True, help="a .mecha or .safetensors path (never overwritten)")
        s.add_argument("--config", help="take the output folder from this run config (not with --dir)")
        s.add_argument("--dir", help=f"the output folder (default: {DEFAULT_DIR}; not with --config)")
        s.add_argument("--storage", help="an Optuna storage URL instead of the folder's study.db files")
        s.add_argument("--json", action="store_true")
        s.set_defaults(fn=fn)

    i = sub.add_parser("import-config", help="an old command-line sd-optim config (with its guide and payload "
                                              "files) as a run config; says what it could not carry over")
    i.add_argument("old_config", help="the old config.yaml")
    i.add_argument("--guide", help="its optimization_guide.yaml (guide.yaml)")
    i.add_argument("--payloads", help="its payloads folder (cargo_*.yaml and cargo/*.yaml)")
    i.add_argument("--out", required=True, help="the run config to write (never overwritten)")
    i.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    i.set_defaults(fn=cmd_import_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, StudyMismatchError, ScorerError, FileExistsError, FileNotFoundError) as e:
        msg = str(e)
        if getattr(args, "json", False):
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return 2
