"""``blip_itm``: BLIP image–text matching (Salesforce BLIP, ViT-L, fine-tuned on COCO), the
probability that an image shows what its prompt says.

transformers' ``BlipForImageTextRetrieval`` with its image–text matching head: the prompt's BERT
encoding attends to the image's ViT tokens, and a two-way classifier says match or not; the score
is the softmax probability of "match" (0–1). Unlike ``clip_score``'s single cosine it reads the
prompt word by word against the picture, so it notices a wrong count, colour or relation more
often; it is also slower. The prompt is cut at 35 tokens, as BLIP was trained.

Options: ``model`` (a folder with the Hugging Face repo ``Salesforce/blip-itm-large-coco``'s
``config.json``, weights, ``preprocessor_config.json`` and tokenizer files; default
``<models_dir>/blip-itm-large-coco``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .base import ImageToScore, ScoreContext, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, image_text_batch, load_model, load_processor

REPO, FOLDER = "Salesforce/blip-itm-large-coco", "blip-itm-large-coco"
FILES = tuple(
    WeightFile(option="model", path=f"{FOLDER}/{name}", about=f"BLIP ITM large ({about})", hf_repo=REPO, hf_file=name,
               in_option_folder=True, approx_size=size, also=also)
    for name, about, size, also in (("config.json", "config", "", ()),
                                    ("model.safetensors", "weights", "1.8 GB", ("pytorch_model.bin",)),
                                    ("preprocessor_config.json", "preprocessing", "", ()),
                                    ("vocab.txt", "tokenizer", "", ()),
                                    ("tokenizer_config.json", "tokenizer", "", ()),
                                    ("special_tokens_map.json", "tokenizer", "", ())))
MAX_TOKENS = 35


@register_scorer
class BlipItmScorer(ModelScorer):
    name = "blip_itm"
    summary = "BLIP image-text matching: the probability that the image shows what its prompt says (0-1)"
    option_defaults: ClassVar[Mapping[str, Any]] = {"model": None}
    files = FILES
    model_options = ("model",)

    def build(self) -> tuple[Any, ...]:
        folder = self.file_path("model")
        return (load_model("BlipForImageTextRetrieval", folder, self.device, self.name),
                load_processor("BlipImageProcessor", folder, self.name),
                load_processor("BertTokenizer", folder, self.name))

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        model, image_processor, tokenizer = self.parts()
        inputs = image_text_batch(images, image_processor, tokenizer, model, MAX_TOKENS)
        with torch.inference_mode():
            out = model(**inputs, use_itm_head=True)
            logits = out.itm_score if hasattr(out, "itm_score") else out[0]
            scores = torch.softmax(logits.float(), dim=-1)[:, 1].tolist()
        return self.finite(scores)
