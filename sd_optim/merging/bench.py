"""``python -m sd_optim bench merge``: the merge engine against a plain tensor loop and against
``sd_mecha.merge``, measured side by side in one run on random weights with a real model's keys
and shapes.

Two random float16 models of the config (every key, the shapes sd-mecha's model config gives)
are written to temporary safetensors files. The recipe is the one a per-block trial builds: a
``weighted_sum`` whose ``alpha`` is a per-key literal of the block values with a default. Each
repetition then times, one after the other:

- ``lerp``: a plain loop of ``torch.lerp(a, b, alpha, out=…)`` per key into preallocated tensors
  (the floor a merge engine can reach without fusing keys);
- ``mecha``: ``sd_mecha.merge`` with its default settings, reading the files, on the device;
- ``engine_first``: the engine's merge into a fresh slot (snapshots of every key taken);
- ``engine_full``: the next trial, every block value changed;
- ``engine_incremental``: the trial after, one block (``IN04``) changed;
- ``restore``: the slot's original weights put back.

The engine's cached inputs are read once before the first repetition (as at a run's start).
The medians are reported with their ratios and the largest difference between the slot and
``sd_mecha.merge``'s output (0 when the arithmetic is the same).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import safetensors.torch
import sd_mecha
import torch
from sd_mecha.extensions import merge_methods, model_configs

from ..search.blocks import DEFAULT_BLOCKS as BLOCK_CONFIGS
from ..search.blocks import block_names, key_to_block
from ._engine import MergeEngine, _NoProgress, _SlotWriter
from .tensor_slot import TensorSlot

CHANGED_BLOCK = "IN04"
CONFIGS = tuple(BLOCK_CONFIGS)  # the model configs with a block layout: sd1-ldm, sdxl-sgm
DEFAULT_ALPHA = 0.5  # the keys no block sets (none in the shipped layouts)


def random_model(model_config: str, seed: int, dtype: torch.dtype = torch.float16,
                 keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Every key a checkpoint of ``model_config`` has (the config's optional keys left out), or
    only ``keys``, in its shape: random normal * 0.02 in ``dtype``, integer keys zero."""
    metadata = model_configs.resolve(model_config).keys()
    wanted = [k for k, m in metadata.items() if not m.optional] if keys is None else list(keys)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key in wanted:
        meta = metadata[key]
        if meta.dtype.is_floating_point:
            out[key] = (torch.randn(meta.shape, generator=generator, dtype=torch.float32) * 0.02).to(dtype)
        else:
            out[key] = torch.zeros(meta.shape, dtype=meta.dtype)
    return out


def some_keys(model_config: str, count: int) -> list[str]:
    """About ``count`` keys spread over the model, the changed block's among them (a quick run)."""
    keys = [k for k, m in model_configs.resolve(model_config).keys().items() if not m.optional]
    k2b = key_to_block(BLOCK_CONFIGS[model_config], model_config)
    step = max(1, len(keys) // max(1, count))
    return [k for i, k in enumerate(keys) if i % step == 0 or k2b.get(k) == CHANGED_BLOCK]


def block_alphas(model_config: str, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {block: round(rng.random(), 4) for block in block_names(BLOCK_CONFIGS[model_config])}


def per_block_recipe(paths: list[Path], model_config: str, alphas: dict[str, float]):
    """``weighted_sum(a, b)`` with ``alpha`` per block, spelled as a trial spells it: a per-key
    literal of the block values, with a default."""
    k2b = key_to_block(BLOCK_CONFIGS[model_config], model_config)
    per_key = sd_mecha.literal({key: alphas[block] for key, block in k2b.items()}, config=model_config)
    a, b = (sd_mecha.model(str(p), config=model_config) for p in paths[:2])
    return sd_mecha.weighted_sum(a, b, alpha=per_key | DEFAULT_ALPHA)


def ties_recipe(paths: list[Path], model_config: str):
    """``ties_sum`` of the second and third model's differences from the first, added to it (what
    sd-mecha's ``add_difference_ties`` builds; its wrapper fails on model nodes, docs/sd-mecha.md)."""
    base, *others = (sd_mecha.model(str(p), config=model_config) for p in paths)
    method = merge_methods.resolve
    deltas = [method("subtract")(other, base) for other in others]
    return method("add_difference")(base, method("ties_sum")(*deltas, k=0.3), alpha=0.5)


def lerp_loop(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
              weights: dict[str, float]) -> None:
    for key, target in out.items():
        if target.is_floating_point():
            torch.lerp(a[key], b[key], weights[key], out=target)
        else:
            target.copy_(a[key])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - start, value


def _max_abs_diff(slot: TensorSlot, merged: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for key, live in slot.tensors.items():
        if live.is_floating_point():
            expected = merged[key].to(device=live.device, dtype=live.dtype)
            worst = max(worst, (live.float() - expected.float()).abs().max().item())
    return worst


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Bench:
    """The models, slot and engine of one benchmark run, and the timings of its repetitions."""

    def __init__(self, model_config: str, device: torch.device, folder: Path, keys: list[str] | None,
                 ties: bool = False):
        self.config, self.device = model_config, device
        self.paths = [folder / f"model_{i}.safetensors" for i in range(3 if ties else 2)]
        for seed, path in enumerate(self.paths, start=1):  # one model in memory at a time
            safetensors.torch.save_file(random_model(model_config, seed, keys=keys), str(path))
        self.ties = ties_recipe(self.paths, model_config) if ties else None
        budget = 2**62 if device.type == "cuda" else 0  # the inputs on the merge device
        self.engine = MergeEngine(device=device, device_budget_bytes=budget)
        self.engine.preload(per_block_recipe(self.paths, model_config, block_alphas(model_config, 0)))
        if self.ties is not None:
            self.engine.preload(self.ties)  # the third model
        # the lerp loop reads the engine's cached inputs: the same tensors, no second copy
        self.a, self.b = (dict(self.engine.cached(p).items()) for p in self.paths[:2])
        self.slot = TensorSlot({k: v.clone() for k, v in self.a.items()})
        self.out = {k: v.clone() for k, v in self.a.items()}  # allocated and touched before timing
        self.k2b = {k: v for k, v in key_to_block(BLOCK_CONFIGS[model_config], model_config).items() if k in self.a}
        self.times: dict[str, list[float]] = {}
        self.max_abs_diff = 0.0
        self.keys_incremental = 0

    def weights(self, alphas: dict[str, float]) -> dict[str, float]:
        return {key: alphas.get(self.k2b.get(key, ""), DEFAULT_ALPHA) for key in self.a}

    def record(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def repetition(self, seed: int) -> None:
        alphas = block_alphas(self.config, seed)
        recipe, weights = per_block_recipe(self.paths, self.config, alphas), self.weights(alphas)
        self.record("lerp", _timed(lambda: lerp_loop(self.a, self.b, self.out, weights), self.device)[0])
        seconds, merged = _timed(lambda: sd_mecha.merge(recipe, merge_device=str(self.device),
                                                        output_device=str(self.device), tqdm=_NoProgress),
                                 self.device)
        self.record("mecha", seconds)
        merged.pop("__metadata__", None)
        first = per_block_recipe(self.paths, self.config, block_alphas(self.config, seed + 1000))
        self.record("engine_first", _timed(lambda: self.engine.apply(first, self.slot, self.config), self.device)[0])
        self.record("engine_full", _timed(lambda: self.engine.apply(recipe, self.slot, self.config), self.device)[0])
        self.max_abs_diff = max(self.max_abs_diff, _max_abs_diff(self.slot, merged))
        del merged
        changed = dict(alphas, **{CHANGED_BLOCK: round(1 - alphas[CHANGED_BLOCK], 4)})
        incremental = per_block_recipe(self.paths, self.config, changed)
        seconds, stats = _timed(lambda: self.engine.apply(incremental, self.slot, self.config), self.device)
        self.record("engine_incremental", seconds)
        self.keys_incremental = stats.keys_computed
        self.record("restore", _timed(self.slot.restore, self.device)[0])
        self.engine.forget_slot()  # the slot holds the original again
        if self.ties is not None:
            self.ties_repetition(self.ties, engine_first=seed % 2 == 0)

    def ties_repetition(self, recipe, engine_first: bool) -> None:
        """A method off the fast path: the engine against sd_mecha.merge on the same cached inputs
        with the same flags, both writing into the slot (which goes first alternates)."""
        engine = self.engine
        opened, flags = engine.with_cached_inputs(recipe), engine.mecha_flags()
        runs = [("ties_engine", lambda: engine.apply(recipe, self.slot, self.config)),
                ("ties_mecha", lambda: sd_mecha.merge(opened, output=_SlotWriter(self.slot), **flags))]
        for name, fn in runs if engine_first else runs[::-1]:
            self.record(name, _timed(fn, self.device)[0])
        self.slot.restore()
        engine.forget_slot()

    def block_share(self) -> float:
        changed = [t for k, t in self.a.items() if self.k2b.get(k) == CHANGED_BLOCK]
        return _nbytes(changed) / _nbytes(self.a.values())


def bench_merge(model_config: str, device: str = "cpu", repeats: int = 3, keys: list[str] | None = None,
                tmp_dir: str | None = None, ties: bool = False) -> dict[str, Any]:
    """Run the benchmark; the medians of ``repeats`` repetitions and their ratios. ``keys``
    limits the models to some keys (the tests' small run); ``ties`` adds TIES (off the fast path)
    through the engine and through sd_mecha.merge with the same flags."""
    if model_config not in BLOCK_CONFIGS:
        raise ValueError(f"config: {model_config!r} is not one of {', '.join(CONFIGS)}")
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="sd_optim_bench_", dir=tmp_dir) as folder:
        bench = _Bench(model_config, dev, Path(folder), keys, ties)
        for seed in range(repeats):
            bench.repetition(seed)
        result: dict[str, Any] = {f"{name}_s": statistics.median(ts) for name, ts in bench.times.items()}
        result.update(
            config=model_config, device=str(dev), device_name=_device_name(dev), repeats=repeats,
            keys=len(bench.a), model_bytes=_nbytes(bench.a.values()), threads=torch.get_num_threads(),
            block=CHANGED_BLOCK, block_share=bench.block_share(), keys_incremental=bench.keys_incremental,
            max_abs_diff=bench.max_abs_diff)
    result["full_vs_lerp"] = result["engine_full_s"] / result["lerp_s"]
    result["mecha_vs_full"] = result["mecha_s"] / result["engine_full_s"]
    if ties:
        result["ties_engine_vs_mecha"] = result["ties_engine_s"] / result["ties_mecha_s"]
    share = result["block_share"] * result["engine_full_s"]
    result["incremental_vs_block_share"] = result["engine_incremental_s"] / share if share else None
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def bench_merge_text(result: dict[str, Any]) -> list[str]:
    gib = result["model_bytes"] / 2**30
    lines = [(f"merge benchmark: {result['config']}, {result['keys']} keys, {gib:.2f} GiB float16 per model, "
             f"on {result['device']} ({result['device_name']}), median of {result['repeats']}")]
    rows = (("plain lerp loop (out=)", "lerp_s"), ("sd_mecha.merge, defaults", "mecha_s"),
            ("engine, first trial (snapshots)", "engine_first_s"), ("engine, full merge", "engine_full_s"),
            (f"engine, one block changed ({result['block']})", "engine_incremental_s"),
            ("restore", "restore_s"), ("TIES, engine (sd-mecha path)", "ties_engine_s"),
            ("TIES, sd_mecha.merge, same inputs and flags", "ties_mecha_s"))
    lines += [f"  {label:<44} {result[key]:9.4f} s" for label, key in rows if key in result]
    lines += [f"  full merge / lerp loop: {result['full_vs_lerp']:.2f}x",
              f"  sd_mecha.merge / full merge: {result['mecha_vs_full']:.1f}x",
              (f"  one block: {result['block_share']:.1%} of the bytes, {result['keys_incremental']} keys recomputed, "
              f"{_ratio(result['incremental_vs_block_share'])} its share of a full merge"),
              f"  largest difference from sd_mecha.merge: {result['max_abs_diff']:g}"]
    if "ties_engine_vs_mecha" in result:
        lines.append(f"  TIES through the engine / through sd_mecha.merge: {result['ties_engine_vs_mecha']:.2f}x")
    return lines
