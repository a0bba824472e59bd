"""``non_degenerate``: 1 for a healthy image, near 0 for the images that fool neural scorers.

A merge that breaks produces flat or near-uniform images, large areas of one colour, or pictures
burnt to black and white; an aesthetic model may still give them a middling score. This scorer
measures three things on each image, each mapped to a factor in [0, 1] (1 = no sign of it):

- flatness: the luminance standard deviation; below ``FLAT_STD`` the factor falls linearly to 0
  (a single-colour image has std 0).
- one colour: the share of pixels in the most common colour, each RGB channel quantised to
  ``COLOUR_LEVELS`` levels; above ``AREA_START`` the factor falls linearly to 0 at 100 %.
- clipping: the share of pixels whose luminance is within ``CLIP_MARGIN`` of black or white;
  above ``CLIP_START`` the factor falls linearly to 0 at 100 %.

Score = the product of the three factors. An image scoring below 0.5 is *degenerate*
(:func:`is_degenerate`).
"""

from __future__ import annotations

import torch

from .base import ImageToScore, ScoreContext, Scorer, register_scorer
from .image_stats import luma, score_by_size

FLAT_STD = 0.05  # luminance std (in [0, 1]; about 13 in 8-bit units) below which an image is flat
COLOUR_LEVELS = 16  # per channel: colours closer than 16 8-bit levels count as one
AREA_START = 0.5  # a single colour covering more than half the image starts to count
CLIP_MARGIN = 2.0 / 255.0
CLIP_START = 0.25  # more than a quarter of the pixels pure black or white starts to count


def _falling(share: torch.Tensor, start: float) -> torch.Tensor:
    """1 up to ``start``, then linearly down to 0 at 1."""
    return ((1.0 - share) / (1.0 - start)).clamp(0.0, 1.0)


def degeneracy(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three measures and their factors for each image of an (N, 3, H, W) batch in [0, 1]:
    ``std``, ``largest_colour`` (share), ``clipped`` (share), and ``score``."""
    brightness = luma(batch).flatten(1)
    std = brightness.std(dim=1, unbiased=False)
    levels = (batch * (COLOUR_LEVELS - 1)).round().long().clamp(0, COLOUR_LEVELS - 1)
    colour = (levels[:, 0] * COLOUR_LEVELS + levels[:, 1]) * COLOUR_LEVELS + levels[:, 2]
    counts = torch.zeros(batch.shape[0], COLOUR_LEVELS ** 3, dtype=batch.dtype, device=batch.device)
    counts.scatter_add_(1, colour.flatten(1), torch.ones_like(brightness))
    largest = counts.max(dim=1).values / brightness.shape[1]
    clipped = ((brightness <= CLIP_MARGIN) | (brightness >= 1.0 - CLIP_MARGIN)).to(batch.dtype).mean(dim=1)
    score = (std / FLAT_STD).clamp(0.0, 1.0) * _falling(largest, AREA_START) * _falling(clipped, CLIP_START)
    return {"std": std, "largest_colour": largest, "clipped": clipped, "score": score}


def is_degenerate(batch: torch.Tensor) -> torch.Tensor:
    """Which images of the batch are degenerate (score below 0.5)."""
    return degeneracy(batch)["score"] < 0.5


@register_scorer
class NonDegenerateScorer(Scorer):
    name = "non_degenerate"
    summary = "1 for a healthy image, near 0 for flat, one-colour or burnt ones; no weights"

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        return score_by_size(images, ctx.device, lambda batch: degeneracy(batch)["score"])
