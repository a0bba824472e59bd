"""``image_stats``: sharpness, contrast and colourfulness, no weights needed.

A cheap guard against merges that wash out, blur or grey the picture. It is not an aesthetic
judgement (noise looks "sharp" to it), so give it a small weight next to a learned scorer.

Each measure is mapped to [0, 1]:

- sharpness: variance of the 3x3 Laplacian of the luminance (values in [0, 1]), mapped by
  ``v / (v + SHARPNESS_HALF)``. Blur detectors commonly call a variance below ~100 in 8-bit
  units (0.0015 here) blurry; at ``SHARPNESS_HALF`` (about 325 in 8-bit units) a picture is
  crisp and scores 0.5.
- contrast: the luminance standard deviation times 2. A [0, 1] variable's std is at most 0.5
  (half black, half white), so this is exactly within [0, 1].
- colourfulness: the metric M of Hasler & Süsstrunk, "Measuring colourfulness in natural
  images" (SPIE 2003), in their 8-bit units, mapped by ``M / (M + COLORFULNESS_HALF)``. Their
  panel called M = 45 "averagely colourful", which scores 0.5 here; M = 0 (grey) scores 0.

The score is the weighted mean of the three with the ``sharpness``, ``contrast`` and
``colorfulness`` option weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import ImageToScore, ScoreContext, Scorer, register_scorer

SHARPNESS_HALF = 0.005
COLORFULNESS_HALF = 45.0

# Rec. 601 luma weights, the ones 8-bit RGB pictures are usually encoded with.
_LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def luma(batch: torch.Tensor) -> torch.Tensor:
    """The (N, H, W) luminance of an (N, 3, H, W) RGB batch (Rec. 601 weights)."""
    return _LUMA[0] * batch[:, 0] + _LUMA[1] * batch[:, 1] + _LUMA[2] * batch[:, 2]


def image_statistics(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Normalised sharpness, contrast and colourfulness of an (N, 3, H, W) batch in [0, 1]."""
    red, green, blue = batch[:, 0], batch[:, 1], batch[:, 2]
    brightness = luma(batch)

    if brightness.shape[-1] >= 3 and brightness.shape[-2] >= 3:
        kernel = torch.tensor(_LAPLACIAN, dtype=batch.dtype, device=batch.device)
        laplacian = F.conv2d(brightness.unsqueeze(1), kernel.view(1, 1, 3, 3))
        lap_var = laplacian.flatten(1).var(dim=1, unbiased=False)
    else:
        lap_var = torch.zeros(batch.shape[0], dtype=batch.dtype, device=batch.device)
    sharpness = lap_var / (lap_var + SHARPNESS_HALF)

    contrast = (2.0 * brightness.flatten(1).std(dim=1, unbiased=False)).clamp(0.0, 1.0)

    rg = 255.0 * (red - green)
    yb = 255.0 * (0.5 * (red + green) - blue)
    rg, yb = rg.flatten(1), yb.flatten(1)
    spread = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    offset = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    colourfulness = spread + 0.3 * offset
    colourfulness = colourfulness / (colourfulness + COLORFULNESS_HALF)

    return {"sharpness": sharpness, "contrast": contrast, "colorfulness": colourfulness}


@register_scorer
class ImageStatsScorer(Scorer):
    name = "image_stats"
    summary = "sharpness, contrast and colourfulness (0-1); no weights"
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "sharpness": 1.0,
        "contrast": 1.0,
        "colorfulness": 1.0,
    }

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        for option in self.option_defaults:
            if self.options[option] < 0:
                raise self.option_error(option, self.options[option], "must be >= 0")
        if sum(self.options[option] for option in self.option_defaults) <= 0:
            raise self.option_error(
                "sharpness",
                self.options["sharpness"],
                "and the other weights are all 0; at least one must be > 0",
            )

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        weights = {name: self.options[name] for name in self.option_defaults}
        total = sum(weights.values())

        def measure(batch: torch.Tensor) -> torch.Tensor:
            stats = image_statistics(batch)
            return sum(weights[name] * stats[name] for name in weights) / total

        return score_by_size(images, ctx.device, measure)


def score_by_size(images: list[ImageToScore], device: torch.device,
                  measure: Callable[[torch.Tensor], torch.Tensor]) -> list[float]:
    """``measure`` (an (N, 3, H, W) batch in [0, 1] -> N scores) applied to the images, those of
    one size stacked into one batch (sizes may differ across prompt sets); scores in input order."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, item in enumerate(images):
        by_size[item.image.size].append(i)
    scores = [0.0] * len(images)
    for indices in by_size.values():
        arrays = [np.asarray(images[i].image.convert("RGB"), dtype=np.float32) for i in indices]
        batch = torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2) / 255.0
        for i, value in zip(indices, measure(batch).tolist()):
            scores[i] = float(value)
    return scores
