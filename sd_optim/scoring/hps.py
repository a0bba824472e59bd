"""``hpsv2`` and ``hpsv2_1``: Human Preference Score v2 and v2.1 (tgxs002/HPSv2), how much people
would prefer each image for its prompt.

Both are open_clip ViT-H-14 models fine-tuned on human preference pairs; a checkpoint
(``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt`` of the Hugging Face repo ``xswu/HPSv2``)
holds the whole CLIP as ``{'state_dict': ...}``, read with ``weights_only=True``. As the original
``img_score.score`` does: the picture's longest side is resized to 224 (bicubic), the rest padded
with black to a centred square (no crop), OpenAI's mean and std; the score is the cosine of the
image and prompt embeddings. Published averages: v2.0 about 0.23–0.29, v2.1 about 0.27–0.33; the
two versions' scores are not comparable, and comparisons mean most between images of one prompt.
Normalised to 0–1 as (score − 0.2) / 0.15, clamped.

Options: ``checkpoint`` (default ``<models_dir>/hps/<file>``), ``clip_arch`` (``ViT-H-14``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from .backbones import ClipBackbone, load_open_clip_backbone
from .base import ImageToScore, ScoreContext, register_scorer
from .clip_score import ClipScorer, image_prompt_cosine
from .files import WeightFile

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def pad_to_square(size: int):
    """HPS's preprocessing: longest side resized to ``size`` (bicubic), padded with black to a
    centred ``size`` x ``size`` square, normalised with OpenAI's mean and std."""

    def transform(image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        height, width = pixels.shape[-2:]
        scale = size / max(height, width)
        if scale != 1.0:
            new = [round(height * scale), round(width * scale)]
            pixels = TF.resize(pixels, new, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        height, width = pixels.shape[-2:]
        left, top = (size - width) // 2, (size - height) // 2
        pixels = F.pad(pixels, (left, size - width - left, top, size - height - top), value=0.0)
        return TF.normalize(pixels, OPENAI_MEAN, OPENAI_STD)

    return transform


def _checkpoint(file_name: str) -> WeightFile:
    return WeightFile(option="checkpoint", path=f"hps/{file_name}", about="the HPS model (open_clip ViT-H-14)",
                      hf_repo="xswu/HPSv2", hf_file=file_name, approx_size="2 GB")


class HpsScorer(ClipScorer):
    """An HPS version: its checkpoint is the whole CLIP, loaded on the scorers' shared cache."""

    option_defaults: ClassVar[Mapping[str, Any]] = {"checkpoint": None, "clip_arch": "ViT-H-14"}
    fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    native_range = (0.2, 0.35)
    preprocessing = "longest side to 224, padded"

    clip_option = "checkpoint"  # no clip_quick_gelu option: LAION's ViT-H-14 uses plain GELU

    def load_backbone(self, arch: str, clip_path, quick_gelu: bool) -> ClipBackbone:
        backbone = load_open_clip_backbone(arch, clip_path, self.device, quick_gelu=quick_gelu)
        size = backbone.model.visual.image_size
        backbone.preprocess = pad_to_square(int(size[0] if isinstance(size, (tuple, list)) else size))
        return backbone

    def load(self) -> None:
        self.clip_backbone()

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        return image_prompt_cosine(self.clip_backbone(), images).tolist()


@register_scorer
class HpsV2Scorer(HpsScorer):
    name = "hpsv2"
    summary = "Human Preference Score v2: how much people would prefer the image for its prompt"
    files = (_checkpoint("HPS_v2_compressed.pt"),)


@register_scorer
class HpsV21Scorer(HpsScorer):
    name = "hpsv2_1"
    summary = "Human Preference Score v2.1 (retrained; not comparable with v2): preference for image and prompt"
    files = (_checkpoint("HPS_v2.1_compressed.pt"),)
