"""``low_noise``: how free of noise an image is, no weights needed.

Merges that go wrong often leave grain or speckle that neural scorers mistake for detail
(``image_stats`` rewards it as sharpness). This scorer estimates the standard deviation of the
noise in the image's luminance and scores a clean image 1, falling as the noise rises. (Noise
drawn independently per RGB channel with std s shows in the luminance with std 0.67 s.)

The estimate is Immerkær's ("Fast noise variance estimation", CVIU 1996): the luminance (in 8-bit
units) is filtered with the 3x3 mask ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, the difference of
two Laplacians, which cancels smooth content and edges to first order; the noise sigma is
``sqrt(pi / 2) / 6`` times the mean absolute response. As Tai & Yang suggest ("A fast method for
image noise estimation using Laplacian operator and adaptive edge detection", 2008), the pixels
on the strongest edges (the top ``EDGE_SHARE`` by Sobel gradient) are left out, since edges leak
into the response and would read as noise.

Score = ``NOISE_HALF / (NOISE_HALF + sigma)``: 1 for no noise, 0.5 at ``sigma = NOISE_HALF``
(option ``half``, in 8-bit units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import ImageToScore, ScoreContext, Scorer, register_scorer
from .image_stats import luma, score_by_size

NOISE_HALF = 4.0  # 8-bit units: about the grain of a high-ISO photograph
EDGE_SHARE = 0.1  # the share of pixels, the strongest edges, left out of the estimate

_MASK = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def _filter(image: torch.Tensor, mask: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    kernel = torch.tensor(mask, dtype=image.dtype, device=image.device).view(1, 1, 3, 3)
    return F.conv2d(image, kernel)


def noise_sigma(batch: torch.Tensor) -> torch.Tensor:
    """The estimated noise standard deviation, in 8-bit units, of each image of an (N, 3, H, W)
    batch in [0, 1] (0 for images smaller than 3x3)."""
    if batch.shape[-1] < 3 or batch.shape[-2] < 3:
        return torch.zeros(batch.shape[0], dtype=batch.dtype, device=batch.device)
    brightness = 255.0 * luma(batch).unsqueeze(1)
    response = _filter(brightness, _MASK).abs().flatten(1)
    gradient = (_filter(brightness, _SOBEL_X).abs()
                + _filter(brightness, tuple(zip(*_SOBEL_X))).abs()).flatten(1)
    k = max(1, math.ceil((1.0 - EDGE_SHARE) * gradient.shape[1]))
    keep = gradient <= gradient.kthvalue(k, dim=1, keepdim=True).values
    mean_response = (response * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    return math.sqrt(math.pi / 2.0) / 6.0 * mean_response


@register_scorer
class LowNoiseScorer(Scorer):
    name = "low_noise"
    summary = "1 for a clean image, falling with grain and speckle; no weights"
    option_defaults: ClassVar[Mapping[str, Any]] = {"half": NOISE_HALF}

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        if self.options["half"] <= 0:
            raise self.option_error("half", self.options["half"], "must be > 0 (the noise that scores 0.5)")

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        half = float(self.options["half"])
        return score_by_size(images, ctx.device, lambda batch: half / (half + noise_sigma(batch)))
