"""Similarity in what pictures show, on the shared CLIP backbone's image embeddings:

- ``reference_clip``: closeness to user-given reference pictures (found as ``reference`` finds
  them: ``<folder>/<prompt set>/<i>.png``, else ``<folder>/<i>.png``). Score = the cosine of the
  image's and its reference's CLIP image embeddings; about 0.9 and above for the same subject and
  style, lower as content or style drift. Unlike ``reference`` it forgives a different pose or
  framing of the same thing.
- ``consistency``: how alike a prompt set's images are to each other, e.g. the same character or
  style across seeds. Score of an image = the mean cosine of its CLIP image embedding to those of
  the other images of its prompt set in the trial (a set of one image scores 1: give the set
  ``batch_size`` 2 or more). Rewarding it alone rewards sameness; pair it with a quality scorer.

Both are cosines (at most 1), normalised to 0–1 by clamping below 0. They take the CLIP options
of ``clip_score`` (``clip``, ``clip_arch``, ``clip_quick_gelu``) and share its backbone, so
their image forward pass is the one ``laion_aesthetic`` and ``clip_score`` run anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F

from .base import ImageToScore, ScoreContext, register_scorer
from .clip_score import ClipScorer
from .reference import reference_images


@register_scorer
class ReferenceClipScorer(ClipScorer):
    name = "reference_clip"
    summary = "closeness to your reference images in what they show (CLIP image cosine)"
    option_defaults: ClassVar[Mapping[str, Any]] = {"folder": None, **ClipScorer.option_defaults}

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        self.references = reference_images(self)

    def check_ready(self) -> list[str]:
        return [*self.references.check_ready(), *super().check_ready()]

    def load(self) -> None:
        self.clip_backbone()

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        backbone = self.clip_backbone()
        pictures = F.normalize(backbone.encode_images([item.image for item in images]), dim=-1)
        references = [self.references.find(item) for item in images]
        # a second forward for the references: it must not replace the batch other scorers share
        wanted = F.normalize(backbone.encode_images(references, remember=False), dim=-1)
        return (pictures * wanted).sum(dim=-1).tolist()


@register_scorer
class ConsistencyScorer(ClipScorer):
    name = "consistency"
    summary = "how alike a prompt set's images are (same character or style across seeds)"

    def load(self) -> None:
        self.clip_backbone()

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        if len(images) < 2:
            return [1.0] * len(images)
        features = F.normalize(self.clip_backbone().encode_images([item.image for item in images]), dim=-1)
        similarity = features @ features.T
        others = (similarity.sum(dim=1) - similarity.diagonal()) / (len(images) - 1)
        return others.tolist()
