"""``image_reward``: ImageReward (THUDM/ImageReward), people's preference for an image given its
prompt, learned from 137K expert comparisons; a z-score (0 is average, ±1 one standard deviation).

The model is BLIP's: a ViT-L/16 image encoder at 224 px, and a BERT text encoder whose layers also
attend to the image's tokens; the prompt's first ([CLS]) output goes through a stack of linear
layers (``mlp.layers.{0,2,4,6,7}``: 768-1024-128-64-16-1, no activations), and the reward is
``(r - 0.16717362830052426) / 1.0333394966054072``. Built here from transformers' BLIP parts
(``BlipVisionModel``, ``BlipTextModel``) with the original checkpoint's keys mapped onto them,
never through the ``image-reward`` package. Preprocessing: shorter side to 224 (bicubic), centre
crop, OpenAI's mean and std; the prompt is cut at 35 tokens (bert-base-uncased, with BLIP's
``[DEC]`` and ``[ENC]`` tokens added). Normalised to 0–1 as (score + 2) / 4, clamped.

Options: ``checkpoint`` (default ``<models_dir>/ImageReward/ImageReward.pt``), ``med_config``
(default ``<models_dir>/ImageReward/med_config.json``), ``tokenizer`` (a folder with
bert-base-uncased's ``vocab.txt``; default ``<models_dir>/bert-base-uncased``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision.transforms as T

from .backbones import safe_torch_load
from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, on_device, transformers_class
from .hps import OPENAI_MEAN, OPENAI_STD
from .laion_aesthetic import head_from_state

REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072
MAX_TOKENS = 35
FILES = (
    WeightFile(option="checkpoint", path="ImageReward/ImageReward.pt", about="the ImageReward model (BLIP and MLP)",
               hf_repo="THUDM/ImageReward", hf_file="ImageReward.pt", approx_size="1.8 GB"),
    WeightFile(option="med_config", path="ImageReward/med_config.json", about="its text encoder's BERT config",
               hf_repo="THUDM/ImageReward", hf_file="med_config.json"),
    WeightFile(option="tokenizer", path="bert-base-uncased/vocab.txt", about="the bert-base-uncased vocabulary",
               hf_repo="google-bert/bert-base-uncased", hf_file="vocab.txt", in_option_folder=True),
)

# the original BLIP ViT's keys -> transformers' BlipVisionModel's
_VISION_KEYS = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def vision_key(key: str) -> str:
    for pattern, replacement in _VISION_KEYS:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def build_reward_model(checkpoint: Path, med_config: Path, device: torch.device, scorer: str):
    """(vision model, text model, MLP head) from the original checkpoint and its BERT config."""
    vision_cls = transformers_class("BlipVisionModel", scorer)
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    state = safe_torch_load(checkpoint)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    vision_state = {vision_key(k): v for k, v in _part(state, "blip.visual_encoder.").items()}
    text_state, mlp_state = _part(state, "blip.text_encoder."), _part(state, "mlp.")
    if not vision_state or not text_state or not mlp_state:
        raise ScorerError(f"{scorer}: {checkpoint} is not an ImageReward checkpoint (it lacks blip.visual_encoder.*, "
                          "blip.text_encoder.* or mlp.*)")
    width, patches = vision_state["embeddings.class_embedding"].shape[-1], vision_state["embeddings.position_embedding"].shape[1] - 1
    patch = vision_state["embeddings.patch_embedding.weight"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in vision_state if k.startswith("encoder.layers."))
    vision = vision_cls(BlipVisionConfig(
        hidden_size=width, intermediate_size=vision_state["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth, num_attention_heads=max(1, width // 64), patch_size=patch,
        image_size=patch * math.isqrt(patches), layer_norm_eps=1e-6))
    med = json.loads(med_config.read_text(encoding="utf-8"))
    text = BlipTextModel(BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], encoder_hidden_size=med["encoder_width"],
        intermediate_size=med["intermediate_size"], num_attention_heads=med["num_attention_heads"],
        num_hidden_layers=med["num_hidden_layers"], max_position_embeddings=med["max_position_embeddings"],
        layer_norm_eps=med.get("layer_norm_eps", 1e-12), hidden_act=med.get("hidden_act", "gelu")),
        add_pooling_layer=False)
    for model, part, name in ((vision, vision_state, "image encoder"), (text, text_state, "text encoder")):
        missing, _ = model.load_state_dict(part, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ScorerError(f"{scorer}: the {name} in {checkpoint} lacks {', '.join(missing[:4])}")
    head = head_from_state(mlp_state, checkpoint, scorer)
    return on_device(vision, device), on_device(text, device), head.to(device)


@register_scorer
class ImageRewardScorer(ModelScorer):
    name = "image_reward"
    summary = "ImageReward: people's preference for the image given its prompt (a z-score; BLIP)"
    option_defaults: ClassVar[Mapping[str, Any]] = {"checkpoint": None, "med_config": None, "tokenizer": None}
    files = FILES
    native_range = (-2.0, 2.0)
    model_options = ("checkpoint", "med_config", "tokenizer")

    def build(self) -> tuple[Any, ...]:
        return _load_parts(self.file_path("checkpoint"), self.file_path("med_config"), self.file_path("tokenizer"),
                           self.device, self.name)

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        vision, text, head, tokenizer, preprocess = self.parts()
        pixels = torch.stack([preprocess(item.image.convert("RGB")) for item in images]).to(self.device)
        tokens = tokenizer([item.prompt for item in images], padding="max_length", truncation=True,
                           max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            image_tokens = vision(pixel_values=pixels.to(next(vision.parameters()).dtype)).last_hidden_state
            image_tokens = image_tokens.to(next(text.parameters()).dtype)
            out = text(input_ids=tokens["input_ids"].to(self.device),
                       attention_mask=tokens["attention_mask"].to(self.device), encoder_hidden_states=image_tokens,
                       encoder_attention_mask=torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=self.device))
            rewards = head(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
            scores = ((rewards - REWARD_MEAN) / REWARD_STD).tolist()
        return self.finite(scores)


def _load_parts(checkpoint: Path, med_config: Path, folder: Path, device: torch.device, scorer: str):
    vision, text, head = build_reward_model(checkpoint, med_config, device, scorer)
    size = vision.config.image_size  # 224 for ImageReward
    preprocess = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                            T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    return vision, text, head, _tokenizer(folder, scorer), preprocess


def _tokenizer(folder: Path, scorer: str):
    """bert-base-uncased with BLIP's two added tokens ([DEC] as bos, [ENC]), as ImageReward builds it."""
    tokenizer = transformers_class("BertTokenizer", scorer)(str(folder / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer
