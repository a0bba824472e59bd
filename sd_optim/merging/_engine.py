"""The first merge engine: sd-mecha over cached inputs, writing through the slot.

Each input checkpoint is read from disk once per run and kept in memory; every trial runs
``sd_mecha.merge`` with the fast flags (no progress bar, no finite checks) straight into the
slot. The engine keeps the interface small (``apply(recipe, slot)``) so a faster engine can
replace it without touching the runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import sd_mecha
import torch
from sd_mecha.recipe_nodes import ModelRecipeNode, OpenModelRecipeNode

from ..search.graph import rebuild
from ._cached import CachedStateDict


class MergeError(RuntimeError):
    pass


@dataclass
class MergeStats:
    seconds: float
    keys_written: int


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
                 threads: int = 0, device_budget_bytes: int = 0):
        """``device_budget_bytes``: how much of the merge device's memory the cached input models
        may use (the WebUI setting "memory budget"); inputs that do not fit stay in CPU memory.
        0 keeps every input in CPU memory."""
        self.device = torch.device(device)
        self.merge_dtype = merge_dtype
        self.threads = threads
        self.device_budget_bytes = device_budget_bytes
        self._cache: dict[str, CachedStateDict] = {}
        self.placement: dict[str, str] = {}  # input path -> device its cached tensors live on

    def cached(self, path: str | Path) -> CachedStateDict:
        key = str(Path(path).resolve())
        if key not in self._cache:
            sd = CachedStateDict.load(key)
            on_device = sum(c.nbytes for k, c in self._cache.items() if self.placement[k] != "cpu")
            if self.device.type != "cpu" and on_device + sd.nbytes <= self.device_budget_bytes:
                sd = CachedStateDict({k: t.to(self.device) for k, t in sd.items()})
            self.placement[key] = str(next(iter(sd.values())).device) if len(sd) else "cpu"
            self._cache[key] = sd
        return self._cache[key]

    def close(self) -> None:
        """Drop the cached input models (their memory goes back as soon as nothing else holds them)."""
        self._cache.clear()
        self.placement.clear()

    def preload(self, recipe) -> None:
        for node in recipe:
            if isinstance(node, ModelRecipeNode):
                self.cached(node.path)

    def _open(self, recipe):
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
        start = time.perf_counter()
        writer = _SlotWriter(slot)
        sd_mecha.merge(
            self._open(recipe),
            output=writer,
            merge_device=str(self.device),
            merge_dtype=self.merge_dtype,
            output_device=None,
            output_dtype=None,
            threads=self.threads,
            check_finite_output=False,
            omit_non_finite_inputs=False,
            check_extra_keys=False,
            validate_mm_contract=False,
            tqdm=_NoProgress,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        missing = self.expected_keys(recipe, model_config) - writer.written
        if missing:
            sample = ", ".join(sorted(missing)[:5])
            raise MergeError(f"the merge produced no value for {len(missing)} keys every input has "
                             f"(e.g. {sample}); sd-mecha dropped them")
        slot.commit()
        return MergeStats(time.perf_counter() - start, len(writer.written))
