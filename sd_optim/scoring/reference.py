"""``reference``: how close each image is to a reference picture of the look you want.

The reference for image ``index`` of prompt set ``payload`` is ``<folder>/<payload>/<index>.png``,
or ``<folder>/<index>.png`` when the prompt set has no folder of its own. It is resized to the
generated image's size (bicubic) before comparing.

Score = 1 - the mean, over a three-level image pyramid (full size, 1/4 and 1/16 of each side,
area-averaged), of the mean absolute RGB difference in [0, 1]. The coarse levels measure where
colours and shapes sit and the full level measures detail, so an image with the right
composition but different fine texture still scores well, which a plain pixel difference does
not allow. Identical images score exactly 1.0; every level is a mean absolute difference, so the
score only falls as an image moves away from its reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import ImageToScore, ScoreContext, Scorer, ScorerError, register_scorer

PYRAMID_FACTORS = (1, 4, 16)


def _to_tensor(image: Image.Image, device: torch.device) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).to(device).permute(2, 0, 1).unsqueeze(0)


def pyramid_similarity(image: torch.Tensor, reference: torch.Tensor) -> float:
    """1 - mean absolute difference averaged over the pyramid; inputs (1, 3, H, W) in [0, 1]."""
    height, width = image.shape[-2:]
    differences = []
    for factor in PYRAMID_FACTORS:
        size = (max(1, height // factor), max(1, width // factor))
        a = F.adaptive_avg_pool2d(image, size) if factor > 1 else image
        b = F.adaptive_avg_pool2d(reference, size) if factor > 1 else reference
        differences.append((a - b).abs().mean())
    return float(1.0 - torch.stack(differences).mean())


@register_scorer
class ReferenceScorer(Scorer):
    name = "reference"
    summary = "closeness to your reference images, coarse to fine (0-1); no weights"
    option_defaults: ClassVar[Mapping[str, Any]] = {"folder": None}

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        if self.options["folder"] is None:
            raise self.option_error(
                "folder", None, "is required: the folder holding the reference images"
            )
        self.folder: Path = self.options["folder"]
        # Decoded references by (path, modification time): re-read only when a file changes.
        self._cache: dict[tuple[Path, int], Image.Image] = {}

    def check_ready(self) -> list[str]:
        if not self.folder.is_dir():
            return [f"reference: the folder {self.folder} does not exist"]
        return []

    def reference_paths(self, item: ImageToScore) -> list[Path]:
        """Where the reference of ``item`` is looked for, in order."""
        return [self.folder / item.payload / f"{item.index}.png", self.folder / f"{item.index}.png"]

    def _reference(self, item: ImageToScore) -> Image.Image:
        tried = self.reference_paths(item)
        for path in tried:
            if path.is_file():
                key = (path, path.stat().st_mtime_ns)
                if key not in self._cache:
                    with Image.open(path) as opened:
                        self._cache[key] = opened.convert("RGB")
                return self._cache[key]
        raise ScorerError(
            f"reference: no reference image for image {item.index} of prompt set "
            f"{item.payload!r}; looked for {', '.join(str(p) for p in tried)}"
        )

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        scores = []
        for item in images:
            reference = self._reference(item)
            if reference.size != item.image.size:
                reference = reference.resize(item.image.size, Image.BICUBIC)
            scores.append(
                pyramid_similarity(
                    _to_tensor(item.image, ctx.device), _to_tensor(reference, ctx.device)
                )
            )
        return scores
