"""``aesthetic_v2_5``: Aesthetic Predictor V2.5 (discus0434/aesthetic-predictor-v2-5), about 1 to 10.

SigLIP so400m-patch14-384's pooled image embedding (transformers' ``SiglipVisionModel``,
``pooler_output``), L2-normalised, goes through a stack of linear layers without activations
(``scoring_head.{0,2,4,6,8}``: 1152-1024-128-64-16-1, dropout in the gaps). Its authors call 5.5
and above a great aesthetic score. It is trained on a wider range of pictures than LAION's
predictor (illustrations and anime included). Normalised to 0–1 as (score − 1) / 9.

Needs transformers 4.37 or newer (SigLIP); with an older one it is listed as unavailable.

Options: ``head`` (default ``<models_dir>/aesthetic_v2_5/aesthetic_predictor_v2_5.pth``),
``vision_model`` (a folder with SigLIP's ``config.json``, ``preprocessor_config.json`` and
``model.safetensors``; default ``<models_dir>/siglip-so400m-patch14-384``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, load_model, load_processor, missing_class, pixel_batch
from .laion_aesthetic import load_aesthetic_head

SIGLIP_SINCE = "4.37"
HEAD_FILE = WeightFile(
    option="head", path="aesthetic_v2_5/aesthetic_predictor_v2_5.pth", about="the V2.5 scoring head (a state dict)",
    url="https://github.com/discus0434/aesthetic-predictor-v2-5/raw/main/models/aesthetic_predictor_v2_5.pth",
    size=2644834, sha256="a6caf256b3dc434273c98dcb12f6bf17c5d4fc647d8df11f038386923dd06220", approx_size="2.6 MB")
VISION_REPO, VISION_DIR = "google/siglip-so400m-patch14-384", "siglip-so400m-patch14-384"
VISION_FILES = tuple(
    WeightFile(option="vision_model", path=f"{VISION_DIR}/{name}", about=f"SigLIP so400m ({about})",
               hf_repo=VISION_REPO, hf_file=name, in_option_folder=True, approx_size=size)
    for name, about, size in (("config.json", "config", ""), ("preprocessor_config.json", "preprocessing", ""),
                              ("model.safetensors", "weights", "3.5 GB")))


@register_scorer
class AestheticV25Scorer(ModelScorer):
    name = "aesthetic_v2_5"
    summary = "Aesthetic Predictor V2.5: how beautiful (about 1-10, 5.5+ great), photos and illustrations, on SigLIP"
    option_defaults: ClassVar[Mapping[str, Any]] = {"head": None, "vision_model": None}
    files = (HEAD_FILE, *VISION_FILES)
    native_range = (1.0, 10.0)

    @classmethod
    def unavailable(cls) -> str:
        return missing_class("SiglipVisionModel", SIGLIP_SINCE)

    model_options = ("head", "vision_model")

    def build(self) -> tuple[Any, ...]:
        head_path, folder = self.file_path("head"), self.file_path("vision_model")
        head = load_aesthetic_head(head_path, self.name, prefix="scoring_head")
        vision = load_model("SiglipVisionModel", folder, self.device, self.name, SIGLIP_SINCE)
        if vision.config.hidden_size != head[0].in_features:
            raise ScorerError(f"{self.name}: the head {head_path} expects {head[0].in_features}-dim embeddings but "
                              f"SigLIP in {folder} gives {vision.config.hidden_size}")
        return vision, load_processor("SiglipImageProcessor", folder, self.name, SIGLIP_SINCE), head.to(self.device)

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        vision, processor, head = self.parts()
        with torch.inference_mode():
            pooled = vision(pixel_values=pixel_batch(images, processor, vision)).pooler_output
            scores = head(F.normalize(pooled.float(), dim=-1)).squeeze(-1).tolist()
        return self.finite(scores)
