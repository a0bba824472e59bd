"""``reference``: how close each image is to a reference picture of the look you want.

The reference for image ``index`` of prompt set ``payload`` is ``<folder>/<payload>/seed-<seed>.png``
for the seed it was made with, else ``<folder>/<payload>/<index>.png``, or ``<folder>/<index>.png``
when the prompt set has no folder of its own. (References by seed serve the images of other seeds
than a trial's own: the confirmation stage's, ``optimizer.confirm_top``.) It is resized to the
generated image's size (bicubic) before comparing.

Option ``measure``:

- ``pyramid`` (default): 1 - the mean, over a three-level image pyramid (full size, 1/4 and 1/16 of each side,
area-averaged), of the mean absolute RGB difference in [0, 1]. The coarse levels measure where
colours and shapes sit and the full level measures detail, so an image with the right
composition but different fine texture still scores well, which a plain pixel difference does
not allow. Identical images score exactly 1.0; every level is a mean absolute difference, so the
score only falls as an image moves away from its reference.
- ``ssim``: the structural similarity of the luminances (:func:`ssim`): local means, contrasts
  and correlation rather than colours, so a re-lit or re-coloured image with the same shapes
  still scores high. 1 for identical images.

For closeness in what a picture shows rather than in its pixels, see ``reference_clip``
(:mod:`.similarity`).
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
from .image_stats import luma

PYRAMID_FACTORS = (1, 4, 16)


def _to_tensor(image: Image.Image, device: torch.device) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).to(device).permute(2, 0, 1).unsqueeze(0)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    line = torch.exp(-(offsets ** 2) / (2 * sigma ** 2))
    line = line / line.sum()
    return (line[:, None] * line[None, :]).view(1, 1, size, size)


def ssim(image: torch.Tensor, reference: torch.Tensor) -> float:
    """The structural similarity (Wang et al. 2004) of the luminances: an 11x11 Gaussian window
    (sigma 1.5, smaller for tiny images), C1 = 0.01², C2 = 0.03², the mean of the SSIM map; 1 for
    identical images, lower as structure, contrast or brightness differ (down to -1)."""
    x, y = luma(image).unsqueeze(1), luma(reference).unsqueeze(1)
    size = min(11, *x.shape[-2:])
    window = _gaussian_window(size, 1.5 * size / 11, image.device)
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x ** 2
    var_y = F.conv2d(y * y, window) - mu_y ** 2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


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


class ReferenceImages:
    """The reference pictures in ``folder``: ``<folder>/<prompt set>/seed-<seed>.png``, else
    ``<folder>/<prompt set>/<index>.png``, else ``<folder>/<index>.png``; decoded once per file
    (again when a file changes)."""

    def __init__(self, scorer: str, folder: Path) -> None:
        self.scorer, self.folder = scorer, folder
        self._cache: dict[tuple[Path, int], Image.Image] = {}

    def check_ready(self) -> list[str]:
        if not self.folder.is_dir():
            return [f"{self.scorer}: the folder {self.folder} does not exist"]
        return []

    def paths(self, item: ImageToScore) -> list[Path]:
        """Where the reference of ``item`` is looked for, in order."""
        return [self.folder / item.payload / f"seed-{item.seed}.png", self.folder / item.payload / f"{item.index}.png",
                self.folder / f"{item.index}.png"]

    def find(self, item: ImageToScore) -> Image.Image:
        tried = self.paths(item)
        for path in tried:
            if path.is_file():
                key = (path, path.stat().st_mtime_ns)
                if key not in self._cache:
                    with Image.open(path) as opened:
                        self._cache[key] = opened.convert("RGB")
                return self._cache[key]
        raise ScorerError(
            f"{self.scorer}: no reference image for image {item.index} of prompt set "
            f"{item.payload!r}; looked for {', '.join(str(p) for p in tried)}"
        )


def reference_images(scorer: Scorer) -> ReferenceImages:
    """The ``folder`` option of ``scorer`` as its reference pictures (the option is required)."""
    if scorer.options["folder"] is None:
        raise scorer.option_error("folder", None, "is required: the folder holding the reference images")
    return ReferenceImages(scorer.name, scorer.options["folder"])


MEASURES = ("pyramid", "ssim")


@register_scorer
class ReferenceScorer(Scorer):
    name = "reference"
    summary = "closeness to your reference images, coarse to fine or structural (0-1); no weights"
    option_defaults: ClassVar[Mapping[str, Any]] = {"folder": None, "measure": "pyramid"}

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        self.references = reference_images(self)
        if self.options["measure"] not in MEASURES:
            raise self.option_error("measure", self.options["measure"], f"must be one of {', '.join(MEASURES)}")

    def check_ready(self) -> list[str]:
        return self.references.check_ready()

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        measure = pyramid_similarity if self.options["measure"] == "pyramid" else ssim
        scores = []
        for item in images:
            reference = self.references.find(item)
            if reference.size != item.image.size:
                reference = reference.resize(item.image.size, Image.BICUBIC)
            scores.append(measure(_to_tensor(item.image, ctx.device), _to_tensor(reference, ctx.device)))
        return scores
