"""An in-memory state dict that sd-mecha treats as an already-open safetensors file.

``sd_mecha.model(dict)`` scans the whole dict once per key in 1.1.8 (quadratic; seconds per
merge for SDXL). Presenting the cached tensors as an open ``SafetensorsMapping`` behind an
``OpenModelRecipeNode`` avoids that and any per-trial file read. The tensors are read into memory
of their own (:func:`sd_optim.files.tensor_files.load_tensors`), never mapped from the file: an input
replaced or truncated during a run cannot take the process down.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from sd_mecha.streaming import SafetensorsMapping, StateDictKeyError, TensorMetadata

from ..files.tensor_files import load_tensors


class CachedStateDict(SafetensorsMapping):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._tensors = tensors

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CachedStateDict:
        return cls(load_tensors(path, device=device))

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._tensors[key]
        except KeyError:
            raise StateDictKeyError(key) from None

    def __contains__(self, item) -> bool:
        return item in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def keys(self) -> Iterable[str]:
        return self._tensors.keys()

    def metadata(self):
        for key, t in self._tensors.items():
            yield key, TensorMetadata(t.shape, t.dtype)

    def values(self):
        return self._tensors.values()

    def items(self):
        return self._tensors.items()

    def pin_memory(self) -> None:
        """Move the tensors to pinned (page-locked) memory one at a time, never holding a second
        copy of the whole model (CUDA only; a RuntimeError when the system refuses)."""
        for key, tensor in self._tensors.items():
            self._tensors[key] = tensor.pin_memory()

    def close(self) -> None:
        """Kept open for the whole run: the engine owns the tensors, not sd-mecha."""

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())
