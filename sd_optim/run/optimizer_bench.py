"""``python -m sd_optim bench optimizer``: the samplers against a merge whose optimum is known.

Two tiny SD1 checkpoints (generated), a block-wise ``weighted_sum`` of them (one ``alpha`` per
block of the UNet's 26: ``BASE``, ``IN00``–``IN11``, ``M00``, ``OUT00``–``OUT11``; and one for the
text encoder: 27 parameters), and a *hidden target*: per-parameter
weights drawn once from a fixed seed. The target's images (the bench's prompt sets and seeds:
the demo's two and two more, four images in four sets, so that a pruner has steps to stop at) are
the references of the ``reference`` scorer, so a trial's value is how close its images are to
the target's; identical images score exactly 1.0, the known optimum.

The ``reference`` scores of merges of two related checkpoints sit close together (a random merge
scores about 0.97–0.99), so regret is reported on a scale that spreads them: the optimum minus
the best value found, as a share of the optimum minus the median value of the ``random``
sampler's trials (the typical random merge). 1.0: no better than a typical random merge; 0: the
optimum. Only completed trials count as found: a pruned trial's value is of part of its images.

Each sampler runs ``seeds`` studies of ``trials`` trials (real runs: merge, generate, score); per
sampler, the median over the seeds of: the regret after 25, 50 and 100 trials (``None`` past
``trials``), the distance of the best trial's weights to the target's (root mean square over the
parameters), the seconds spent generating and the trials pruned. ``default`` is the product's
default optimizer configuration (``optimizer.sampler``, ``optimizer.sampler_options`` and
``optimizer.pruner`` of a config that names none); ``default+median`` the same with the median
pruner (Optuna's defaults: no pruning in the first 5 trials).

``default+confirm`` adds the confirmation stage (``optimizer.confirm_top: 5``), judged against a
truth the trials never see: each of the top 5 trials' mean ``reference`` score on
``TRUTH_ROUNDS`` more rounds of seeds (after the trials' own and the confirmation's; the target
rendered for every one). Per seed, whether the stage's winner is the truly best of the five, and
whether the highest raw value is; and how far each pick falls short of the truly best, scaled as
regret is.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ..config import OptimizerSettings, config_from_dict
from ..demo import demo_config, render_references
from ..hosts.standalone import make_host
from ..merging import MergeEngine
from ..scoring import ImageToScore, ScoreContext, build_scorers
from ..search.planning import make_planner
from ..tiny_models import tiny_diffusers_config, tiny_model_set
from . import events as ev
from .runner import Runner, RunOptions, run_to_end, seed_round

CHECKPOINTS = (25, 50, 100)
TARGET_SEED = 1234
_DEFAULT = OptimizerSettings()
SAMPLERS: dict[str, dict[str, Any]] = {  # name: the optimizer settings it runs with
    "random": {"sampler": "random"},
    "tpe": {"sampler": "tpe"},
    "cmaes": {"sampler": "cmaes"},
    "gp": {"sampler": "gp"},
    # Optuna's fixed 10 random start-up trials, against the run's (sized to its trials: study.startup_trials)
    "tpe-10": {"sampler": "tpe", "sampler_options": {"n_startup_trials": 10}},
    "gp-10": {"sampler": "gp", "sampler_options": {"n_startup_trials": 10}},
    "default": {"sampler": _DEFAULT.sampler, "sampler_options": dict(_DEFAULT.sampler_options),
                "pruner": _DEFAULT.pruner},
    "default+median": {"sampler": _DEFAULT.sampler, "sampler_options": dict(_DEFAULT.sampler_options),
                       "pruner": "median"},
    "default+confirm": {"sampler": _DEFAULT.sampler, "sampler_options": dict(_DEFAULT.sampler_options),
                        "pruner": _DEFAULT.pruner, "confirm_top": 5},
}
TRUTH_ROUNDS = 4  # rounds of held-out seeds whose mean score is a top trial's true value
EXTRA_SETS = [  # beside the demo's two prompt sets: four sets, a step for a pruner after each
    {"name": "tree", "prompt": "a tall tree in a field", "seed": 11},
    {"name": "car", "prompt": "a red car on a street", "negative_prompt": "blurry", "seed": 13},
]


def bench_config(folder: Path, models: list[Path], config_dir: Path, references: Path) -> dict[str, Any]:
    """The demo's run config, block-wise, with four prompt sets of one image each (the sampler,
    pruner, seed, trials and study are set per run)."""
    data = demo_config(folder, models, config_dir, 1, references)
    data["guide"] = {"diffuser": ["all"], "clip_l": ["single"]}
    house = data["payloads"][1]
    data["payloads"] += [{**house, "negative_prompt": "", **extra} for extra in EXTRA_SETS]
    data["payloads"][0] = {**data["payloads"][0], "batch_size": 1}
    data["optimizer"] = {"trials": 1, "score_inputs": False}
    return data


def hidden_target(names: list[str]) -> dict[str, float]:
    """The target's weights: one per parameter, away from the bounds, from a fixed seed."""
    rng = random.Random(TARGET_SEED)
    return {name: round(rng.uniform(0.1, 0.9), 3) for name in names}


def bench_optimizer(trials: int, seeds: int, samplers: list[str] | None = None,
                    folder: Path | None = None) -> dict[str, Any]:
    """Every sampler's figures (see the module's docstring) as the JSON the CLI prints."""
    names = samplers or list(SAMPLERS)
    folder = Path(folder or tempfile.mkdtemp(prefix="sd-optim-bench-optimizer-"))
    models = tiny_model_set("sd1", folder / "models", n=2, seed=0)
    data = bench_config(folder, models, tiny_diffusers_config("sd1", folder / "diffusers-config"),
                        folder / "references")
    config = config_from_dict(data, base_dir=folder)
    host = make_host(config)
    params = make_planner(config, host.model_config()).space.distributions()
    target = hidden_target(sorted(params))
    render_references(config, host, target, folder / "references")
    rounds = range(2 + TRUTH_ROUNDS) if any(SAMPLERS[n].get("confirm_top") for n in names) else range(0)
    for r in rounds:  # by seed: the confirmation's seeds and the held-out ones
        _render_round(config, host, target, folder / "references", r)
    runs = {name: [_run(host, data, folder, name, seed, trials) for seed in range(seeds)] for name in names}
    typical = statistics.median(v for run in runs.get("random", []) for v in run["values"] if v is not None) \
        if "random" in runs else None
    figures = {name: _figures(rs, target, typical, trials) for name, rs in runs.items()}
    for name, rs in runs.items():
        if any("confirm" in r for r in rs):
            figures[name]["confirmation"] = _confirmation_figures(host, config, rs, typical)
    return {"params": len(params), "trials": trials, "seeds": seeds, "optimum": 1.0,
            "random_median": typical, "samplers": figures}


def _shifted(config, host, r: int) -> list[tuple[Any, Any]]:
    """The config's prompt sets on their ``r``-th round of seeds (0: the trials' own; 1: the
    confirmation stage's)."""
    return seed_round(Runner(config, host)._jobs(), r)


def _render_round(config, host, target: dict[str, float], folder: Path, r: int) -> None:
    """The target's images on seed round ``r``, as ``<set>/seed-<seed>.png``."""
    planner = make_planner(config, host.model_config())
    with host.open_slot() as slot:
        MergeEngine(device=host.device).apply(planner.recipe(target), slot, planner.model_config)
        for payload, job in _shifted(config, host, r):
            (folder / payload.name).mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(host.generate(job)):
                img.image.save(folder / payload.name / f"seed-{job.seed + i}.png")


def _true_value(host, config, params: dict[str, float]) -> float:
    """A trial's mean ``reference`` score over the held-out seed rounds."""
    planner = make_planner(config, host.model_config())
    (scorer,) = build_scorers(config.absolute().scorers, models_dir=None, device=host.device)
    scores = []
    with host.open_slot() as slot:
        MergeEngine(device=host.device).apply(planner.recipe(params), slot, planner.model_config)
        for r in range(2, 2 + TRUTH_ROUNDS):
            for payload, job in _shifted(config, host, r):
                batch = [ImageToScore(g.image, g.prompt, g.negative_prompt, g.seed, payload.name, i)
                         for i, g in enumerate(host.generate(job))]
                scores += scorer.score(batch, ScoreContext(device=host.device))
    return statistics.fmean(scores)


def _confirmation_figures(host, config, runs: list[dict[str, Any]], typical: float | None) -> dict[str, Any]:
    """Over the seeds: how often the confirmation's winner and the raw maximum are the truly best
    of the top trials, and the median shortfall of each pick (scaled as regret)."""
    scale = (1.0 - typical) if typical is not None and typical < 1.0 else 1.0
    right = {"confirmed": 0, "raw": 0}
    gaps: dict[str, list[float]] = {"confirmed": [], "raw": []}
    for run in runs:
        c = run["confirm"]
        truth = {n: _true_value(host, config, c["params"][n]) for n in c["top"]}
        best = max(truth.values())
        for kind, pick in (("confirmed", c["winner"]), ("raw", c["top"][0])):
            right[kind] += truth[pick] == best
            gaps[kind].append((best - truth[pick]) / scale)
    return {"top": len(runs[0]["confirm"]["top"]), "truly_best_picked": right, "of": len(runs),
            "shortfall": {k: round(statistics.median(v), 4) for k, v in gaps.items()}}


def _run(host, data: dict[str, Any], folder: Path, name: str, seed: int, trials: int) -> dict[str, Any]:
    """One study of ``trials`` trials with the settings ``name`` and ``seed``: its values in trial
    order (None: not completed), the best trial's parameters, the seconds spent generating and
    the trials pruned."""
    optimizer = {**data["optimizer"], **SAMPLERS[name], "seed": seed, "trials": trials,
                 "study": f"{name.replace('+', '-')}-{seed}"}
    config = config_from_dict({**data, "optimizer": optimizer}, base_dir=folder)
    events: list[ev.Event] = []
    run_to_end(Runner(config, host, RunOptions(save_images=False)), events.append)
    finished = [e for e in events if isinstance(e, ev.TrialFinished)]
    best = max((f for f in finished if f.state == "COMPLETE"), key=lambda f: f.value)
    out = {"values": [f.value if f.state == "COMPLETE" else None for f in finished], "best_params": best.params,
           "generation_s": sum(f.timings.get("generate", 0.0) for f in finished),
           "pruned": sum(f.state == "PRUNED" for f in finished)}
    started = [e.trials for e in events if isinstance(e, ev.ConfirmationStarted)]
    winner = [e.winner for e in events if isinstance(e, ev.ConfirmationFinished) and e.winner is not None]
    if started and winner:
        out["confirm"] = {"top": started[0], "winner": winner[0],
                          "params": {f.number: f.params for f in finished if f.number in started[0]}}
    return out


def _figures(runs: list[dict[str, Any]], target: dict[str, float], typical: float | None,
             trials: int) -> dict[str, Any]:
    """Medians over a sampler's seeds."""
    def regret(values: list[float | None], n: int) -> float | None:
        found = [v for v in values[:n] if v is not None]
        if n > trials or not found:
            return None
        gap = 1.0 - max(found)
        return gap / (1.0 - typical) if typical is not None and typical < 1.0 else gap

    out: dict[str, Any] = {}
    for n in CHECKPOINTS:
        found = [regret(r["values"], n) for r in runs]
        out[f"regret_{n}"] = None if None in found else round(statistics.median(found), 4)
    finals = [regret(r["values"], trials) for r in runs]
    out["regret_final"] = None if None in finals else round(statistics.median(finals), 4)
    out["weight_distance"] = round(statistics.median(_distance(r["best_params"], target) for r in runs), 4)
    out["generation_s"] = round(statistics.median(r["generation_s"] for r in runs), 2)
    out["pruned"] = statistics.median(r["pruned"] for r in runs)
    return out


def _distance(params: dict[str, float], target: dict[str, float]) -> float:
    return (sum((params[k] - v) ** 2 for k, v in target.items()) / len(target)) ** 0.5


def bench_optimizer_text(result: dict[str, Any]) -> list[str]:
    """The figures as a table (regret as a share of a typical random merge's: see the module)."""
    lines = [(f"{result['params']} parameters, {result['trials']} trials, {result['seeds']} seeds; regret = "
             f"(1 - best) / (1 - median random trial {result['random_median']})"),
             (f"{'sampler':15s} {'regret@25':>10s} {'regret@50':>10s} {'regret@100':>11s} {'final':>8s} "
             f"{'weights':>8s} {'generate':>9s} {'pruned':>7s}")]
    for name, f in result["samplers"].items():
        cells = ["-" if f[key] is None else f"{f[key]:.3f}"
                 for key in [f"regret_{n}" for n in CHECKPOINTS] + ["regret_final"]]
        lines.append(f"{name:15s} {cells[0]:>10s} {cells[1]:>10s} {cells[2]:>11s} {cells[3]:>8s} "
                     f"{f['weight_distance']:8.3f} {f['generation_s']:8.1f}s {f['pruned']:7g}")
    for name, f in result["samplers"].items():
        c = f.get("confirmation")
        if c:
            lines.append(f"{name}: of the top {c['top']}, the truly best (mean over {TRUTH_ROUNDS} held-out seed rounds) "
                         f"was picked by the confirmation in {c['truly_best_picked']['confirmed']} of {c['of']} "
                         f"seeds, by the raw maximum in {c['truly_best_picked']['raw']}; median shortfall "
                         f"{c['shortfall']['confirmed']:.3f} vs {c['shortfall']['raw']:.3f}")
    return lines
