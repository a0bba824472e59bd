"""``python -m sd_optim bench scorers``: per scorer, the time to load it and to score an image at
batch 1 and batch 8, and what sharing one CLIP backbone saves against separate copies, measured
side by side in one run. On tiny random weights (the default: the code paths, not the real
models' cost) or on the real files in a scorer models folder."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, Problem
from .base import BackboneCache, ImageToScore, ScoreContext, Scorer, available_scorers, get_scorer_class
from .inventory import inventory
from .tiny import random_image, write_tiny_scorers

SHARED = ("laion_aesthetic", "clip_score", "consistency")  # the scorers on one CLIP ViT-L/14
IMAGE_SIZE = (256, 256)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The median of ``repeats`` timings of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(n: int, start: int = 0) -> list[ImageToScore]:
    return [ImageToScore(image=random_image(start + i, IMAGE_SIZE), prompt="a photo of a red fox on a hill",
                         negative_prompt="", seed=i, payload="p", index=i) for i in range(n)]


def _build(name: str, options: dict[str, Any], folder: Path, device: torch.device,
           backbones: BackboneCache) -> Scorer:
    return get_scorer_class(name)(options, models_dir=folder, device=device, backbones=backbones)


def _one(name: str, options: dict[str, Any], folder: Path, device: torch.device, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    scorer = _build(name, options, folder, device, BackboneCache())
    scorer.load()
    _sync(device)
    load = time.perf_counter() - start
    ctx = ScoreContext(device=device)
    # fresh image objects each call: a backbone must not serve a remembered batch
    one = _timed(lambda: scorer.score(_images(1, 100), ctx), device, repeats)
    eight = _timed(lambda: scorer.score(_images(8, 200), ctx), device, repeats) / 8
    return {"name": name, "load_s": round(load, 4), "batch1_s_per_image": round(one, 5),
            "batch8_s_per_image": round(eight, 5), "batch8_speedup": round(one / eight, 2) if eight else None}


def _shared(options: dict[str, dict[str, Any]], chosen: list[str], folder: Path, device: torch.device,
            repeats: int) -> dict[str, Any]:
    names = [n for n in SHARED if n in chosen]
    if len(names) < 2:
        return {}
    cache = BackboneCache()
    together = [_build(n, options[n], folder, device, cache) for n in names]
    apart = [_build(n, options[n], folder, device, BackboneCache()) for n in names]
    for scorer in together + apart:
        scorer.load()
    ctx = ScoreContext(device=device)

    def run(scorers: list[Scorer]) -> None:
        batch = _images(8, 300)
        for scorer in scorers:
            scorer.score(batch, ctx)

    shared, separate = _timed(lambda: run(together), device, repeats), _timed(lambda: run(apart), device, repeats)
    return {"scorers": names, "shared_s": round(shared, 4), "separate_s": round(separate, 4),
            "separate_over_shared": round(separate / shared, 2) if shared else None,
            "backbone_loads_shared": sum(cache.loads.values())}


def bench_scorers(device: str = "cpu", models_dir: str | None = None, names: list[str] | None = None,
                  repeats: int = 3) -> dict[str, Any]:
    """The figures (see the module's text); real files from ``models_dir``, else tiny weights."""
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="sd-optim-bench-") as tmp:
        if models_dir:
            folder = Path(models_dir).expanduser()
            options = {e["name"]: {} for e in inventory(folder) if e["installed"] and e["files"] and not e["unavailable"]}
        else:
            folder = Path(tmp)
            options = write_tiny_scorers(folder)
        unknown = [n for n in (names or []) if n not in available_scorers()]
        if unknown:
            raise ConfigError([Problem("--scorers", f"unknown scorer(s); available: {', '.join(available_scorers())}",
                                       unknown)])
        chosen = [n for n in (names or sorted(options)) if n in options]
        rows = [_one(name, options[name], folder, dev, repeats) for name in chosen]
        return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "weights": str(folder) if models_dir else "tiny random weights", "image_size": list(IMAGE_SIZE),
                "scorers": rows, "shared_backbone": _shared(options, chosen, folder, dev, repeats),
                "not_run": sorted(set(names or []) - set(chosen))}


def bench_text(result: dict[str, Any]) -> list[str]:
    width, height = result["image_size"]
    lines = [f"scorers on {result['device_name']} ({result['device']}), {result['weights']}, images {width}x{height}",
             f"{'scorer':<18}{'load s':>9}{'s/img b1':>11}{'s/img b8':>11}{'b8 gain':>9}"]
    for row in result["scorers"]:
        lines.append(f"{row['name']:<18}{row['load_s']:>9.3f}{row['batch1_s_per_image']:>11.4f}"
                     f"{row['batch8_s_per_image']:>11.4f}{row['batch8_speedup']:>8.2f}x")
    shared = result["shared_backbone"]
    if shared:
        lines.append(f"shared backbone ({', '.join(shared['scorers'])}, 8 images): {shared['shared_s']:.3f} s shared, "
                     f"{shared['separate_s']:.3f} s separate: separate / shared = {shared['separate_over_shared']}x")
    if result["not_run"]:
        lines.append(f"not run (no files, or unavailable here): {', '.join(result['not_run'])}")
    return lines
