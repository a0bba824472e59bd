"""``clip_score``: how well each image matches its prompt (prompt adherence), on OpenAI CLIP
ViT-L/14 (or any open_clip model the user has), and :class:`ClipScorer`, the base of the scorers
built on that shared backbone.

Score = ``100 * max(0, cos(image embedding, prompt embedding))``, the CLIP score of Hessel et al.
("CLIPScore", 2021) as torchmetrics reports it. On ViT-L/14 a matching prompt gives about 25 to
35 and an unrelated one under 15; it is normalised to 0–1 as ``score / 40``. The prompt is the
image's own (wildcards drawn), without the negative prompt. It rewards following the prompt, not
beauty: pair it with an aesthetic scorer.

Options (shared with every :class:`ClipScorer`):

- ``clip``: the CLIP weights (see :mod:`.backbones` for the accepted files). Default
  ``<models_dir>/clip/ViT-L-14-openai.safetensors`` (what ``scorers download`` fetches), then
  OpenAI's ``<models_dir>/clip/ViT-L-14.pt`` and ``~/.cache/clip/ViT-L-14.pt``, where OpenAI's
  ``clip`` package (and A1111's CLIP interrogator) keeps it.
- ``clip_arch``: the open_clip model name for a state-dict file, default ``ViT-L-14``.
- ``clip_quick_gelu``: build that model with QuickGELU, as OpenAI trained it; default true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .backbones import CLIP_VIT_L_14, ClipBackbone, load_open_clip_backbone
from .base import ImageToScore, ScoreContext, Scorer, register_scorer
from .files import WeightFile

CLIP_FILENAME = "ViT-L-14.pt"  # OpenAI's own file
CLIP_FILE = WeightFile(
    option="clip", path="clip/ViT-L-14-openai.safetensors", about="OpenAI CLIP ViT-L/14 (open_clip weights)",
    hf_repo="timm/vit_large_patch14_clip_224.openai", hf_file="open_clip_model.safetensors",
    approx_size="1.7 GB",
    note="OpenAI's own ViT-L-14.pt (what clip.load('ViT-L/14') keeps in ~/.cache/clip) works too")


class ClipScorer(Scorer):
    """A scorer on the shared CLIP backbone: its options, its file, and loading it once per
    (weights, architecture, device) for every scorer that shares it."""

    backbone = CLIP_VIT_L_14
    option_defaults: ClassVar[Mapping[str, Any]] = {"clip": None, "clip_arch": "ViT-L-14", "clip_quick_gelu": True}
    files = (CLIP_FILE,)
    # OpenAI's TorchScript file, where a user may already have it
    fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "clip": (f"clip/{CLIP_FILENAME}", f"~/.cache/clip/{CLIP_FILENAME}"),
    }

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        if not self.options["clip_arch"]:
            raise self.option_error("clip_arch", self.options["clip_arch"], "must name an open_clip model")
        self._backbone: ClipBackbone | None = None

    def clip_backbone(self) -> ClipBackbone:
        """The shared backbone, loaded the first time any scorer on it asks."""
        if self._backbone is None:
            clip_path = self.file_path(self.clip_option)
            arch, quick_gelu = self.options["clip_arch"], self.options.get("clip_quick_gelu", False)
            key = (CLIP_VIT_L_14, arch, str(clip_path.resolve()), quick_gelu, str(self.device), self.preprocessing)
            self._backbone = self.backbones.get(key, lambda: self.load_backbone(arch, clip_path, quick_gelu))
        return self._backbone

    # what the pictures go through before CLIP: part of what decides whether a backbone is shared
    preprocessing: ClassVar[str] = "resize and centre crop"
    clip_option: ClassVar[str] = "clip"  # the option (and file) that holds the CLIP weights

    def load_backbone(self, arch: str, clip_path, quick_gelu: bool) -> ClipBackbone:
        return load_open_clip_backbone(arch, clip_path, self.device, quick_gelu=quick_gelu)


@register_scorer
class ClipScoreScorer(ClipScorer):
    name = "clip_score"
    summary = "prompt adherence: how well each image matches its prompt (CLIP score, 0-100)"
    native_range = (0.0, 40.0)

    def load(self) -> None:
        self.clip_backbone()

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        return (100.0 * image_prompt_cosine(self.clip_backbone(), images).clamp(min=0.0)).tolist()


def image_prompt_cosine(backbone: ClipBackbone, images: list[ImageToScore]) -> torch.Tensor:
    """The cosine of each image's CLIP embedding and its own prompt's."""
    pictures = F.normalize(backbone.encode_images([item.image for item in images]), dim=-1)
    prompts = F.normalize(backbone.encode_texts([item.prompt for item in images]), dim=-1)
    return (pictures * prompts).sum(dim=-1)
