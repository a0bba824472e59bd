"""``city_aesthetics``: CityAesthetics (city96/CityClassifiers), an anime aesthetic score, 0 to 1.

The image embedding of OpenAI CLIP ViT-L/14 at 336 px (transformers'
``CLIPVisionModelWithProjection``, ``image_embeds``, not normalised) goes through the predictor of
``model.py``: ``up`` (Linear 768-1024 and a residual block: Linear, LeakyReLU 0.1, Linear,
LeakyReLU 0.1, Linear, added to its input, then ReLU), ``down`` (Linear 1024-128, Linear 128-64,
Dropout, LeakyReLU, Linear 64-32, Linear 32-1), and ``(tanh + 1) / 2``. Its authors read it as a
percentage: under 10 % photos and noise, 20–40 % sketches, over 50 % high quality.

Options: ``head`` (default ``<models_dir>/city_aesthetics/CityAesthetics-Anime-v1.8.safetensors``),
``vision_model`` (a folder with the CLIP's ``config.json``, ``preprocessor_config.json`` and
weights; default ``<models_dir>/clip-vit-large-patch14-336``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .backbones import read_state_dict
from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, load_model, load_processor, pixel_batch

HEAD_FILE = WeightFile(
    option="head", path="city_aesthetics/CityAesthetics-Anime-v1.8.safetensors", about="the CityAesthetics predictor",
    hf_repo="city96/CityAesthetics", hf_file="CityAesthetics-Anime-v1.8.safetensors", approx_size="16 MB")
VISION_REPO, VISION_DIR = "openai/clip-vit-large-patch14-336", "clip-vit-large-patch14-336"
VISION_FILES = tuple(
    WeightFile(option="vision_model", path=f"{VISION_DIR}/{name}", about=f"CLIP ViT-L/14-336 ({about})",
               hf_repo=VISION_REPO, hf_file=name, in_option_folder=True, approx_size=size, also=also)
    for name, about, size, also in (("config.json", "config", "", ()),
                                    ("preprocessor_config.json", "preprocessing", "", ()),
                                    ("pytorch_model.bin", "weights", "1.7 GB", ("model.safetensors",))))


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.long = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.1), nn.Linear(width, width),
                                  nn.LeakyReLU(0.1), nn.Linear(width, width))

    def forward(self, x):
        return torch.relu(self.long(x) + x)


class CityPredictor(nn.Module):
    """The predictor of CityClassifiers' ``model.py`` (score mode), sizes from its state dict."""

    def __init__(self, sizes: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        features, hidden = sizes["up.0"]
        self.up = nn.Sequential(nn.Linear(features, hidden), ResBlock(hidden))
        self.down = nn.Sequential(nn.Linear(*sizes["down.0"]), nn.Linear(*sizes["down.1"]), nn.Dropout(0.1),
                                  nn.LeakyReLU(), nn.Linear(*sizes["down.4"]), nn.Linear(*sizes["down.5"]))

    def forward(self, x):
        return (torch.tanh(self.down(self.up(x))) + 1.0) / 2.0


def load_city_predictor(path: Path) -> CityPredictor:
    state = read_state_dict(path)
    layers = ("up.0", "up.1.long.0", "up.1.long.2", "up.1.long.4", "down.0", "down.1", "down.4", "down.5")
    wanted = {f"{layer}.{part}" for layer in layers for part in ("weight", "bias")}
    if set(state) != wanted:
        raise ScorerError(f"city_aesthetics: {path} is not a CityAesthetics predictor (score mode): expected "
                          f"the keys up.0.*, up.1.long.*, down.*; found {sorted(state)[:6]}")
    sizes = {layer: (state[f"{layer}.weight"].shape[1], state[f"{layer}.weight"].shape[0]) for layer in layers}
    try:
        predictor = CityPredictor(sizes)
        predictor.load_state_dict({key: tensor.float() for key, tensor in state.items()})
    except RuntimeError as error:
        raise ScorerError(f"city_aesthetics: the layers of {path} do not fit together: {error}") from error
    return predictor.eval()


@register_scorer
class CityAestheticsScorer(ModelScorer):
    name = "city_aesthetics"
    summary = "CityAesthetics: anime aesthetic score (0-1) on CLIP ViT-L/14 at 336 px"
    option_defaults: ClassVar[Mapping[str, Any]] = {"head": None, "vision_model": None}
    files = (HEAD_FILE, *VISION_FILES)
    model_options = ("head", "vision_model")

    def build(self) -> tuple[Any, ...]:
        head, folder = self.file_path("head"), self.file_path("vision_model")
        predictor = load_city_predictor(head)
        vision = load_model("CLIPVisionModelWithProjection", folder, self.device, self.name)
        if vision.config.projection_dim != predictor.up[0].in_features:
            raise ScorerError(f"city_aesthetics: {head} expects {predictor.up[0].in_features}-dim embeddings but "
                              f"the CLIP in {folder} gives {vision.config.projection_dim}")
        return vision, load_processor("CLIPImageProcessor", folder, self.name), predictor.to(self.device)

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        vision, processor, predictor = self.parts()
        with torch.inference_mode():
            embeds = vision(pixel_values=pixel_batch(images, processor, vision)).image_embeds
            scores = predictor(embeds.float()).squeeze(-1).tolist()
        return self.finite(scores)
