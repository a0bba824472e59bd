"""The merge engine: a trial's recipe merged from cached inputs straight into the host's slot.

Each input checkpoint is read from disk once per run and kept in memory (a LoRA's conversion
too, once it is computed). A recipe made of the linear methods (``weighted_sum``,
``add_difference``, ``subtract``, ``n_average``, ``add_perpendicular``, with scalar, per-block or
per-key hyperparameters, with LoRAs) runs on the fast path (:mod:`._fast`): one expression per
key, plain tensor operations, and only the keys whose expression changed since the last trial
written again (incremental merges). Any other recipe runs through ``sd_mecha.merge`` with the
fast flags (no progress bar, no finite checks). Both give the same tensors, bit for bit.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sd_mecha
import torch
from sd_mecha.recipe_nodes import ModelRecipeNode, OpenModelRecipeNode

from ..search.graph import rebuild
from ._cached import CachedStateDict
from ._fast import Plan, PlanCache, Unsupported, recipe_shape, run_expression

log = logging.getLogger(__name__)


MERGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # merge_precision -> dtype


class MergeError(RuntimeError):
    pass


@dataclass
class MergeStats:
    seconds: float
    keys_written: int  # keys the merge gives a value (written now or unchanged since the last trial)
    keys_computed: int = -1  # keys computed and written this time (-1: all of them, by sd-mecha)
    path: str = "sd-mecha"  # "fast" or "sd-mecha"


class _NoProgress:
    """A do-nothing tqdm: the default one costs time per key (docs/sd-mecha.md)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass

    def set_postfix(self, *args, **kwargs):
        pass


class _SlotWriter(MutableMapping):
    """sd-mecha's output mapping: forwards tensors to the slot, drops the metadata entry."""

    def __init__(self, slot):
        self.slot = slot
        self.written: set[str] = set()
        self._lock = threading.Lock()

    def __setitem__(self, key, value):
        if key == "__metadata__":
            return
        self.slot[key] = value
        with self._lock:
            self.written.add(key)

    def __getitem__(self, key):
        return self.slot[key]

    def __delitem__(self, key):
        raise TypeError("cannot delete slot keys")

    def __iter__(self):
        return iter(self.written)

    def __len__(self):
        return len(self.written)


class MergeEngine:
    def __init__(self, *, device: str | torch.device = "cpu", merge_dtype: torch.dtype = torch.float32,
                 threads: int = 0, device_budget_bytes: int = 0, fast: bool = True):
        """``device_budget_bytes``: how much of the merge device's memory the cached input models
        may use (the WebUI setting "memory budget"); inputs that do not fit stay in CPU memory.
        0 keeps every input in CPU memory. ``fast``: False sends every recipe to sd-mecha."""
        self.device = torch.device(device)
        self.merge_dtype = merge_dtype
        self.threads = threads
        self.device_budget_bytes = device_budget_bytes
        self.fast = fast
        self._cache: dict[str, CachedStateDict] = {}
        self.placement: dict[str, str] = {}  # input path -> device its cached tensors live on
        # the slot the last merge wrote (weakly: a closed slot's snapshots must go), and the
        # expression each of its keys holds now
        self._slot: weakref.ref | None = None
        self._written: dict[str, tuple] = {}
        self._written_plan: int | None = None  # the serial of the plan the slot holds in full
        self._plans = PlanCache()
        self._converted: dict[Any, str] = {}  # a LoRA conversion's shape -> its name in the cache
        self.last_unsupported = ""  # why the last recipe went to sd-mecha ("" when it did not)

    def cached(self, path: str | Path) -> CachedStateDict:
        if path in self._cache:  # a resolved path, or the name of a converted LoRA
            return self._cache[path]
        key = str(Path(path).resolve())
        if key not in self._cache:
            sd = CachedStateDict.load(key)
            on_device = sum(c.nbytes for k, c in self._cache.items() if self.placement[k] != "cpu")
            if self.device.type != "cpu" and on_device + sd.nbytes <= self.device_budget_bytes:
                sd = CachedStateDict({k: t.to(self.device) for k, t in sd.items()})
            elif self.device.type == "cuda":
                try:  # streamed to the GPU key by key: from pinned memory that copies fastest
                    sd.pin_memory()
                except RuntimeError as e:
                    log.info("merge inputs stay in pageable memory (pinning refused: %s)", e)
            self.placement[key] = str(next(iter(sd.values())).device) if len(sd) else "cpu"
            self._cache[key] = sd
        return self._cache[key]

    def close(self) -> None:
        """Drop the cached input models (their memory goes back as soon as nothing else holds them)."""
        self._cache.clear()
        self.placement.clear()
        self._converted.clear()
        self._plans.clear()
        self.forget_slot()

    def forget_slot(self) -> None:
        """Assume nothing about what the slot holds: the next merge writes every key."""
        self._slot, self._written, self._written_plan = None, {}, None

    def preload(self, recipe) -> None:
        for node in recipe:
            if isinstance(node, ModelRecipeNode):
                self.cached(node.path)

    def mecha_flags(self) -> dict[str, Any]:
        """The arguments of every ``sd_mecha.merge`` the engine runs besides the recipe and the
        output: its device, precision and threads, and no progress bar or checks (docs/sd-mecha.md)."""
        return {"merge_device": str(self.device), "merge_dtype": self.merge_dtype, "output_device": None,
                "output_dtype": None, "threads": self.threads, "check_finite_output": False,
                "omit_non_finite_inputs": False, "check_extra_keys": False, "validate_mm_contract": False,
                "tqdm": _NoProgress}

    def with_cached_inputs(self, recipe):
        """``recipe`` with every model node reading the engine's cached tensors instead of its file."""
        def swap(node: ModelRecipeNode):
            return OpenModelRecipeNode(self.cached(node.path), node.path, node.model_config,
                                       node.merge_space)

        return rebuild(recipe, on_model=swap)

    def expected_keys(self, recipe, model_config: str) -> set[str]:
        """Keys every input provides and the model config knows: the merge must write them all."""
        from sd_mecha.extensions import model_configs

        config_keys = set(model_configs.resolve(model_config).keys())
        expected = set(config_keys)
        for node in recipe:
            if isinstance(node, ModelRecipeNode):
                keys = set(self.cached(node.path).keys())
                if node.model_config is not None:
                    is_model = node.model_config.identifier == model_config
                else:  # a .mecha line with model_config=null: sd-mecha's own >= 10% key-name rule
                    is_model = len(keys & config_keys) >= 0.1 * len(config_keys)
                if is_model:  # LoRAs and other configs supply some keys only
                    expected &= keys
        return expected

    def apply(self, recipe, slot, model_config: str) -> MergeStats:
        """Merge ``recipe`` into ``slot`` (every key of ``model_config`` it gives a value)."""
        start = time.perf_counter()
        plan = self._plan(recipe, model_config) if self.fast else None
        if plan is not None:
            if plan.base is None:  # an updated plan gives the keys its base gave
                try:
                    self._check_written(recipe, model_config, set(plan.keys))
                except MergeError:
                    self._plans.clear()  # never the base of an update
                    raise
            computed = self._run_plan(plan, slot)
            slot.commit()
            return MergeStats(time.perf_counter() - start, len(plan.keys), computed, "fast")
        self.forget_slot()  # sd-mecha writes every key
        writer = _SlotWriter(slot)
        sd_mecha.merge(self.with_cached_inputs(recipe), output=writer, **self.mecha_flags())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._check_written(recipe, model_config, writer.written)
        slot.commit()
        return MergeStats(time.perf_counter() - start, len(writer.written))

    def converted(self, node) -> tuple[str, CachedStateDict]:
        """A LoRA's conversion to the model config (the delta of every key it has), computed by
        sd-mecha the first time and kept with the inputs: the fast path reads it as an input."""
        shape = (str(self.merge_dtype), recipe_shape(node, []))
        name = self._converted.get(shape)
        if name is None:
            flags = {**self.mecha_flags(), "output_device": str(self.device), "strict_merge_space": "delta"}
            out = sd_mecha.merge(self.with_cached_inputs(node), **flags)
            out.pop("__metadata__", None)
            name = f"<{node.merge_method.identifier} #{len(self._converted)}>"
            self._cache[name], self.placement[name] = CachedStateDict(out), str(self.device)
            self._converted[shape] = name
        return name, self._cache[name]

    def _check_written(self, recipe, model_config: str, written: set[str]) -> None:
        missing = self.expected_keys(recipe, model_config) - written
        if missing:
            sample = ", ".join(sorted(missing)[:5])
            raise MergeError(f"the merge produced no value for {len(missing)} keys every input has "
                             f"(e.g. {sample}); sd-mecha dropped them")

    def _plan(self, recipe, model_config: str) -> Plan | None:
        """The recipe's per-key plan, or None when it holds something only sd-mecha runs."""
        try:
            plan = self._plans.compile(recipe, self.cached, model_config, self.merge_dtype, self.converted)
        except Unsupported as why:
            if str(why) != self.last_unsupported:
                log.info("merging through sd-mecha: the fast path does not run %s", why)
            self.last_unsupported = str(why)
            return None
        self.last_unsupported = ""
        return plan

    def _run_plan(self, plan: Plan, slot) -> int:
        """Write the keys whose expression differs from what the slot holds; how many."""
        if self._slot is None or self._slot() is not slot:
            self.forget_slot()
            self._slot = weakref.ref(slot)
        keys = plan.changed if plan.base is not None and plan.base == self._written_plan else plan.keys
        self._written_plan = None
        try:
            computed = self._write_keys(plan, keys, slot)
        except BaseException:
            self.forget_slot()  # a key half written: trust nothing next time
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._written_plan = plan.serial
        return computed

    def _write_keys(self, plan: Plan, keys, slot) -> int:
        """Compute ``keys`` into the slot: in place where the slot offers the live tensor
        (``writable``), else into a new tensor the slot copies."""
        writer = _SlotWriter(slot)
        computed = 0
        for key in keys:
            expr = plan.keys.get(key)
            if self._written.get(key) == expr:
                continue
            if expr is None:  # no value now: what the slot holds stays (as sd-mecha leaves it)
                self._written.pop(key, None)
                continue
            self._written.pop(key, None)
            self._write_key(slot, writer, key, expr, plan.inputs)
            self._written[key] = expr
            computed += 1
        return computed

    def _write_key(self, slot, writer: _SlotWriter, key: str, expr, inputs) -> None:
        out = slot.writable(key)
        if out is not None and out.is_inference():  # a WebUI's parameter (Forge): written only there
            with torch.inference_mode():
                value = run_expression(expr, inputs, self.device, self.merge_dtype, out)
        else:  # (entering the mode for every key would cost ~1.5 ms a full SD1 merge)
            value = run_expression(expr, inputs, self.device, self.merge_dtype, out)
        if value is not out:
            writer[key] = value
