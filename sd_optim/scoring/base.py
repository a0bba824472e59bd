"""The Scorer contract, the scorer registry and the shared-backbone cache.

A scorer turns a batch of generated images into one finite number per image. Scorers are
registered by name with :func:`register_scorer`; the runner builds the configured ones with
:func:`build_scorers`, which gives them one :class:`BackboneCache` so that scorers built on the
same network (LAION aesthetic and CLIP score both use OpenAI CLIP ViT-L/14) load it once.
"""

from __future__ import annotations

import abc
import difflib
import math
import os
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch

from ..errors import Problem
from .files import WeightFile, first_file, with_alternatives

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageToScore:
    """One generated image and what it was generated from."""

    image: Image.Image
    prompt: str
    negative_prompt: str
    seed: int
    payload: str  # prompt-set name
    index: int  # image index within the prompt set, 0-based


@dataclass
class ScoreContext:
    """Per-call facts a scorer may need besides the images.

    A scorer that waits (for a person's rating, say) polls ``should_stop`` and raises
    :class:`ScoringStopped` when it returns True, so a Stop click never hangs the run.
    """

    device: torch.device
    should_stop: Callable[[], bool] = lambda: False
    ratings: Any = None  # the run's RatingDesk (sd_optim.scoring.manual) when a person can rate
    trial: int = -1  # the trial being scored (-1: an input model's reference row)


class ScoringStopped(Exception):
    """A stop was requested while a scorer was waiting."""


class ScorerError(Exception):
    """A scorer cannot be built or run: bad option, missing weights file, broken weights."""


class BackboneCache:
    """Loads each shared backbone once and hands the same object to every scorer asking.

    ``key`` must identify everything that changes the loaded object: the backbone id, the
    weights path, the device (and any variant flags). ``loads`` counts real loads per key.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self.loads: Counter[Hashable] = Counter()
        self.offloaded = False  # the models were moved to the CPU between trials

    def get(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        if key not in self._items:
            self._items[key] = loader()
            self.loads[key] += 1
        return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        """Drop every loaded backbone (at the end of a run, to give the memory back)."""
        self._items.clear()

    def models(self) -> list[torch.nn.Module]:
        """The torch modules the cached objects hold: a backbone's ``model``, a tuple's modules."""
        found: list[torch.nn.Module] = []

        def visit(value: Any) -> None:
            if isinstance(value, torch.nn.Module):
                found.append(value)
            elif isinstance(value, (tuple, list)):
                for item in value:
                    visit(item)
            elif isinstance(getattr(value, "model", None), torch.nn.Module):
                found.append(value.model)

        for value in self._items.values():
            visit(value)
        return found

    def device_bytes(self, device: torch.device) -> int:
        """Bytes of the cached models' weights and buffers on ``device`` (``cuda`` counts every
        CUDA device, ``cuda:1`` only that one)."""
        device = torch.device(device)

        def on(t: torch.Tensor) -> bool:
            return t.device.type == device.type and device.index in (None, t.device.index)

        return sum(t.numel() * t.element_size() for m in self.models() for t in (*m.parameters(), *m.buffers())
                   if on(t))

    def offload(self) -> None:
        """Every cached model moved to the CPU, and what the backbones remember (the last batch's
        embeddings, prompts') dropped: the GPU memory goes back to the WebUI between trials."""
        for value in self._items.values():
            forget = getattr(value, "forget", None)
            if callable(forget):
                forget()
        for model in self.models():
            model.to("cpu")
        self.offloaded = True

    def restore(self, device: torch.device) -> None:
        """The models back on ``device`` after :meth:`offload` (nothing to do otherwise)."""
        if self.offloaded:
            for model in self.models():
                model.to(device)
            self.offloaded = False


class Scorer(abc.ABC):
    """A family of image scores. Subclasses set ``name`` and implement :meth:`score`.

    ``option_defaults`` declares every option the scorer accepts; the type of a default is the
    type of the option (``None`` marks an optional file or folder path). Options are checked in
    ``__init__`` so a bad config fails before anything is generated.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # what it measures, in one line (the scorers list, the tab)
    backbone: ClassVar[str | None] = None
    needs_person: ClassVar[bool] = False  # it waits for ratings handed in through the tab
    # offered in the tab's list before its files are there (False: a heavy, optional scorer,
    # offered once they are; the scorer guide lists it with its Download either way)
    offered_before_download: ClassVar[bool] = True
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    files: ClassVar[tuple[WeightFile, ...]] = ()  # the weight files it needs (see .files)
    # the scores it gives (low, high); :meth:`normalize` maps them to 0–1 for averaging
    native_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    # other places a file may already be, by its option, looked at after its own place: a relative
    # path is under the models folder, ``~`` is the user's home
    fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(
        self,
        options: Mapping[str, Any] | None,
        *,
        models_dir: Path | str | None,
        device: torch.device | str,
        backbones: BackboneCache,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else None
        self.device = torch.device(device)
        self.backbones = backbones
        self.options = self._resolve_options(options or {})

    @classmethod
    def unavailable(cls) -> str:
        """Why this scorer cannot run in this environment whatever files it gets (a library too
        old or missing); "" when it can."""
        return ""

    def check_ready(self) -> list[str]:
        """Problems that would stop :meth:`load`: the environment lacking what it needs, each
        missing file, where it was looked for, where it comes from and the command that
        downloads it."""
        reason = self.unavailable()
        problems = [Problem(self.name, f"unavailable here: {reason}")] if reason else []
        for file in self.files:
            candidates = self.file_candidates(file)
            if first_file(candidates) is not None:
                continue
            fetch = (f"; or run: python -m sd_optim scorers download {self.name}"
                     if file.downloadable and self.options.get(file.option) is None else "")
            where = " or ".join(str(path) for path in candidates) if candidates else \
                f"nowhere (no {file.option!r} option and no scorer models folder)"
            problems.append(Problem(self.name, f"{file.option} weights ({file.name}) not found at {where}; "
                                               f"source: {file.source}{fetch}"))
        return problems

    def file_candidates(self, file: WeightFile) -> list[Path]:
        """Where ``file`` is looked for: the file its option names, else :meth:`places`."""
        chosen = self.options.get(file.option)
        if chosen is not None:
            return with_alternatives(file, [chosen / file.name]) if file.in_option_folder else [chosen]
        return self.places(file, self.models_dir)

    @classmethod
    def places(cls, file: WeightFile, models_dir: Path | None) -> list[Path]:
        """Where ``file`` is looked for when no option names it: its place in the models folder,
        then the scorer's fallbacks."""
        places = []
        for place in (file.path, *cls.fallbacks.get(file.option, ())):
            path = Path(place).expanduser()
            if path.is_absolute():
                places.append(path)
            elif models_dir is not None:
                places.append(models_dir / path)
        return with_alternatives(file, places)

    def file_path(self, option: str) -> Path:
        """The file found for ``option`` (for a folder option, the folder), once every file of
        the scorer is there (:meth:`check_ready`)."""
        problems = self.check_ready()
        if problems:
            raise ScorerError("; ".join(problems))
        file = next(f for f in self.files if f.option == option)
        found = first_file(self.file_candidates(file))
        assert found is not None  # check_ready found it
        return found.parent if file.in_option_folder else found

    def load(self) -> None:
        """Load weights; calling it again does nothing."""

    @abc.abstractmethod
    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        """One finite float per image, in order, for the whole batch."""

    def finite(self, scores: list[float]) -> list[float]:
        """``scores`` when every one is a finite number; else a ScorerError (broken weights)."""
        if not all(math.isfinite(value) for value in scores):
            raise ScorerError(f"{self.name}: non-finite scores {scores}; are the weights broken?")
        return scores

    def normalize(self, value: float) -> float:
        """``value`` on the common 0–1 scale: :attr:`native_range` mapped linearly, clamped."""
        if not math.isfinite(value):
            return value  # left for the combination to refuse, naming the scorer
        low, high = self.native_range
        return min(1.0, max(0.0, (value - low) / (high - low)))

    def option_error(self, option: str, value: Any, reason: str) -> ScorerError:
        return ScorerError(f"scorer {self.name!r}: option {option!r} = {value!r} {reason}")

    def _resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(options, Mapping):
            raise ScorerError(f"scorer {self.name!r}: options must be a mapping, got {options!r}")
        resolved = dict(self.option_defaults)
        for option, value in options.items():
            if option not in self.option_defaults:
                known = sorted(self.option_defaults)
                close = difflib.get_close_matches(str(option), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.option_error(
                    option, value, f"is not an option of this scorer{hint} (options: {known})"
                )
            resolved[option] = self._coerce_option(option, value, self.option_defaults[option])
        return resolved

    def _coerce_option(self, option: str, value: Any, default: Any) -> Any:
        if default is None:
            # Path options: an empty text box in the UI means "use the default location".
            if value is None or value == "":
                return None
            if isinstance(value, (str, os.PathLike)):
                return Path(value).expanduser()
            raise self.option_error(option, value, "must be a file or folder path")
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise self.option_error(option, value, "must be true or false")
            return value
        if isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.option_error(option, value, "must be a number")
            if not math.isfinite(value):
                raise self.option_error(option, value, "must be a finite number")
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise self.option_error(option, value, "must be a string")
            return value
        return value


_REGISTRY: dict[str, type[Scorer]] = {}

ScorerClass = TypeVar("ScorerClass", bound=type[Scorer])


def register_scorer(cls: ScorerClass) -> ScorerClass:
    """Class decorator adding a scorer to the registry under ``cls.name``.

    Registering the very same class again is a no-op (a WebUI "Reload UI" re-runs the extension's
    scripts while our modules stay imported); another class under a taken name raises.
    """
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"register_scorer expects a Scorer subclass, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty class attribute 'name'")
    existing = _REGISTRY.get(name)
    if existing is cls:
        return cls
    if existing is not None:
        raise ScorerError(
            f"scorer name {name!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}; "
            f"cannot register {cls.__module__}.{cls.__qualname__} under it"
        )
    _REGISTRY[name] = cls
    return cls


def available_scorers() -> list[str]:
    return sorted(_REGISTRY)


def get_scorer_class(name: str) -> type[Scorer]:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = available_scorers()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ScorerError(
            f"unknown scorer {name!r}.{hint} Available scorers: {', '.join(known) or 'none'}"
        ) from None


class ScorerSpecLike(Protocol):
    name: str
    options: Mapping[str, Any]


def build_scorers(
    specs: Sequence[ScorerSpecLike],
    *,
    models_dir: Path | str | None,
    device: torch.device | str,
) -> list[Scorer]:
    """Instantiate the configured scorers (options validated, nothing loaded yet)."""
    backbones = BackboneCache()
    return [
        get_scorer_class(spec.name)(
            dict(spec.options or {}), models_dir=models_dir, device=device, backbones=backbones
        )
        for spec in specs
    ]
