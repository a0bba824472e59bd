"""``pickscore``: PickScore (yuvalkirstain/PickScore), how much people would prefer each image for
its prompt, learned from the Pick-a-Pic preference pairs.

A CLIP ViT-H/14 fine-tuned on those pairs (transformers' ``CLIPModel``, the Hugging Face repo
``yuvalkirstain/PickScore_v1``), with the processor of the CLIP it started from
(``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: image preprocessing and tokenizer, prompts cut at 77
tokens). Score = ``logit_scale.exp() * cos(image embedding, prompt embedding)``, as the authors
compute it before the softmax over a prompt's images. Typical values lie around 18–23; it is
normalised to 0–1 as (score − 15) / 10, clamped (an approximation: the scale is not published).

Options: ``model`` (a folder with ``config.json`` and ``model.safetensors``; default
``<models_dir>/PickScore_v1``), ``processor`` (a folder with ``preprocessor_config.json``,
``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``; default ``<models_dir>/CLIP-ViT-H-14-laion2B-s32B-b79K``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .base import ImageToScore, ScoreContext, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, image_text_batch, load_model, load_processor

MODEL_REPO, PROCESSOR_REPO = "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MODEL_FILES = tuple(
    WeightFile(option="model", path=f"PickScore_v1/{name}", about=f"PickScore v1 ({about})", hf_repo=MODEL_REPO,
               hf_file=name, in_option_folder=True, approx_size=size)
    for name, about, size in (("config.json", "config", ""), ("model.safetensors", "weights", "3.9 GB")))
PROCESSOR_FILES = tuple(
    WeightFile(option="processor", path=f"CLIP-ViT-H-14-laion2B-s32B-b79K/{name}", about=f"CLIP-H processor ({name})",
               hf_repo=PROCESSOR_REPO, hf_file=name, in_option_folder=True)
    for name in ("preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer_config.json"))
CONTEXT = 77  # tokens a prompt is cut to


@register_scorer
class PickScoreScorer(ModelScorer):
    name = "pickscore"
    summary = "PickScore: how much people would prefer the image for its prompt (Pick-a-Pic, CLIP-H)"
    option_defaults: ClassVar[Mapping[str, Any]] = {"model": None, "processor": None}
    files = (*MODEL_FILES, *PROCESSOR_FILES)
    native_range = (15.0, 25.0)
    model_options = ("model", "processor")

    def build(self) -> tuple[Any, ...]:
        processor = self.file_path("processor")
        return (load_model("CLIPModel", self.file_path("model"), self.device, self.name),
                load_processor("CLIPImageProcessor", processor, self.name),
                load_processor("CLIPTokenizer", processor, self.name))

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        model, image_processor, tokenizer = self.parts()
        with torch.inference_mode():
            out = model(**image_text_batch(images, image_processor, tokenizer, model, CONTEXT))
            cosine = (out.image_embeds.float() * out.text_embeds.float()).sum(dim=-1)
            scores = (model.logit_scale.exp().float() * cosine).tolist()
        return self.finite(scores)
