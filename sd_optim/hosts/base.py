"""The Host and Slot contracts every environment implements (docs/architecture.md).

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
from pathlib import Path
from typing import Any

import torch

from ..config.model import Payload


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
    # a prompt set's defaults (config.model.Payload is their one source)
    negative_prompt: str = Payload.negative_prompt
    seed: int = Payload.seed
    steps: int = Payload.steps
    cfg_scale: float = Payload.cfg_scale
    sampler: str = Payload.sampler
    scheduler: str = Payload.scheduler
    width: int = Payload.width
    height: int = Payload.height
    n_images: int = Payload.batch_size
    extra: dict[str, Any] = field(default_factory=dict)
    # added to each image's infotext (the trial and its parameters), after the WebUI's own fields
    infotext_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeptMerge:
    """A merge left loaded in the host after a run (keep-best)."""

    study: str
    trial: int
    value: float
    recipe: str  # the .mecha text
    recipe_path: str = ""  # best.mecha in the run folder

    def infotext_params(self) -> dict[str, str]:
        """What an image generated from the kept merge adds to its infotext."""
        params = {"sd-optim merge": f"{self.study} trial {self.trial}"}
        if self.recipe_path:
            params["sd-optim recipe"] = self.recipe_path
        return params


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

    def writable(self, key: str) -> torch.Tensor | None:
        """The live tensor behind ``key`` in checkpoint layout, for the merge engine to compute
        into in place (its snapshot is taken now; written under ``torch.inference_mode()`` when it
        is an inference tensor), or None where only ``slot[key] = value`` may write it (fused or
        transposed parameters, keys off the live model, hooks that a raw write would bypass)."""
        return None

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"slot keys cannot be deleted (key {key!r})")

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def commit(self) -> None:
        """Host-specific work after a batch of writes (caches, conditioning, ...)."""

    def keep(self) -> None:
        """Make the current weights the model's own: forget every snapshot, so that
        :meth:`restore` (and the host's slot exit) leaves them loaded (keep-best)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep a merge loaded")

    @abc.abstractmethod
    def restore(self) -> None:
        """Put back every snapshotted tensor, bit-exact, and forget the snapshots."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class Host(abc.ABC):
    """One environment that holds a loaded model and renders images with it."""

    name: str = "host"
    # what ends a merge left loaded (Keep loaded, keep-best), said in the status and the tab
    kept_until: str = "loading another checkpoint (or reloading this one) brings the original back"

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

    def model_changed(self) -> str:
        """While a slot is open: why the loaded weights are no longer the ones the run started
        with (the WebUI switched or reloaded the checkpoint), or "" when they still are."""
        return ""

    # --- after a run (keep-best, save-best) -----------------------------------------------------

    def checkpoint_dir(self) -> Path | None:
        """The folder the host lists checkpoints from; ``None``: save-best writes to the run folder."""
        return None

    def refresh_checkpoints(self) -> None:
        """Re-list the checkpoints after save-best wrote one."""

    def mark_kept(self, kept: KeptMerge | None) -> None:
        """The loaded weights are now ``kept`` (a merge), or the original again (``None``)."""
        self._kept = kept

    def kept_merge(self) -> KeptMerge | None:
        """The merge still loaded, or ``None`` (never kept, or the host reloaded weights since)."""
        return getattr(self, "_kept", None)

    def release_kept(self) -> None:
        """A run is about to open the slot: put the model file's own weights back where a kept
        merge replaced them, for a host that owns its model (standalone). A WebUI's kept merge is
        the model the user has loaded now, so WebUI hosts leave it (it goes when the WebUI reloads
        the checkpoint) and the run restores to it."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def samplers(self) -> list[str]:
        """Sampler names this host accepts (A1111 names)."""
        return []

    def schedulers(self) -> list[str]:
        return []

    def sampler_problems(self, sampler: str, scheduler: str) -> dict[str, str]:
        """What is wrong with a prompt set's sampler / scheduler names here, by field
        (``"sampler"``, ``"scheduler"``); checked before a run starts."""
        return name_problems(sampler, scheduler, self.samplers(), self.schedulers())


def name_problems(sampler: str, scheduler: str, samplers: list[str], schedulers: list[str]) -> dict[str, str]:
    """A sampler / scheduler pair against a host's lists (an empty list accepts any name)."""
    problems = {}
    if samplers and sampler not in samplers:
        problems["sampler"] = f"not a sampler of this host, got {sampler!r} (valid: {', '.join(samplers)})"
    if schedulers and scheduler not in schedulers:
        problems["scheduler"] = (f"not a scheduler of this host, got {scheduler!r} "
                                 f"(valid: {', '.join(schedulers)})")
    return problems
