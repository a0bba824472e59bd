"""A slot over a plain dict of tensors: a model held as its state dict, with the snapshots and
bit-exact restore every host's slot keeps. ``bench merge`` merges into one; so do the engine's
equivalence tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..hosts.base import Slot


class TensorSlot(Slot):
    """``tensors`` are the live model: written in place, never replaced."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self._snapshots: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        target = self._target(key)
        if value.shape != target.shape:
            raise ValueError(f"shape mismatch for {key!r}: got {tuple(value.shape)}, the model has "
                             f"{tuple(target.shape)}")
        target.copy_(value)

    def writable(self, key: str) -> torch.Tensor:
        """The live tensor of ``key``, to be written in place (its snapshot is taken now)."""
        return self._target(key)

    def _target(self, key: str) -> torch.Tensor:
        target = self.tensors[key]
        if key not in self._snapshots:
            self._snapshots[key] = target.detach().to("cpu", copy=True)
        return target

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def restore(self) -> None:
        for key, value in self._snapshots.items():
            self.tensors[key].copy_(value)
        self._snapshots.clear()

    def keep(self) -> None:
        self._snapshots.clear()

    @property
    def written(self) -> int:
        """Keys written since the last restore (the snapshots held)."""
        return len(self._snapshots)

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device if self.tensors else torch.device("cpu")
