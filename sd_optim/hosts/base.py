"""The Host and Slot contracts every environment implements (see DESIGN.md).

A *Host* is the program that owns the loaded checkpoint and can generate images with it: the
A1111 / Forge WebUI or the standalone diffusers pipeline. A *Slot* is that loaded checkpoint
seen as a mapping in the checkpoint's own key names (the sd-mecha model config's keys),
whatever the host calls its parameters internally.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint the user can pick."""

    title: str
    path: str
    short_hash: str = ""


@dataclass(frozen=True)
class GenerationJob:
    """One prompt set, resolved (wildcards already expanded), ready to render.

    ``sampler`` and ``scheduler`` use the A1111 names ("Euler a", "DPM++ 2M"; "Automatic",
    "Karras", ...). Image ``i`` of the job uses seed ``seed + i``, as A1111 does for a batch.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    width: int = 512
    height: int = 512
    n_images: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    prompt: str
    negative_prompt: str
    infotext: str = ""


class Slot(MutableMapping, abc.ABC):
    """The live model's tensors under checkpoint key names.

    ``slot[key] = tensor`` copies into the live parameter in place (the live dtype and device);
    it must copy, never keep the tensor it was given: merge outputs may be the merge engine's
    cached input tensors themselves. The first write to a key snapshots its original value so
    that :meth:`restore` can put it back bit-exact. Keys cannot be deleted.
    """

    @abc.abstractmethod
    def __getitem__(self, key: str) -> torch.Tensor:
        """The current value of ``key`` in checkpoint layout."""

    @abc.abstractmethod
    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        """Copy ``value`` into the live parameter(s) behind ``key``."""

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"slot keys cannot be deleted (key {key!r})")

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def commit(self) -> None:
        """Host-specific work after a batch of writes (caches, conditioning, ...)."""

    @abc.abstractmethod
    def restore(self) -> None:
        """Put back every snapshotted tensor, bit-exact, and forget the snapshots."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class Host(abc.ABC):
    """One environment that holds a loaded model and renders images with it."""

    name: str = "host"

    @abc.abstractmethod
    def model_config(self) -> str:
        """The sd-mecha model config id of the loaded model (``sd1-ldm``, ``sdxl-sgm``)."""

    @abc.abstractmethod
    def checkpoints(self) -> list[CheckpointRef]: ...

    @abc.abstractmethod
    def open_slot(self) -> contextlib.AbstractContextManager[Slot]:
        """Context manager yielding the slot; restores the original weights on every exit."""

    @abc.abstractmethod
    def generate(
        self, job: GenerationJob, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[GeneratedImage]:
        """Render the job's images one at a time; stops early when ``should_stop()``."""

    def interrupted(self) -> bool:
        """The host's own interrupt (the WebUI's Interrupt button)."""
        return False

    def stop_reason(self) -> str:
        """Why :meth:`interrupted` is true, in words for the run's summary."""
        return "interrupted"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def samplers(self) -> list[str]:
        """Sampler names this host accepts (A1111 names)."""
        return []

    def schedulers(self) -> list[str]:
        return []
