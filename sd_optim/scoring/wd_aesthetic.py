"""``wd_aesthetic``: the Waifu Diffusion aesthetic classifier (0 to 1), made for anime pictures.

The OpenAI CLIP ViT-B/32 image embedding, L2-normalised, goes through a small classifier
(waifu-diffusion/aesthetic, ``aesthetic.py``): ``fc1`` 512-256, ReLU, ``fc2`` 256-128, ReLU,
``fc3`` 128-1, sigmoid. It was trained on "aesthetic" / "not aesthetic" labels, so the score is
the probability of the first. The original feeds transformers' CLIP with its processor; here the
same OpenAI weights run through open_clip with the same preprocessing (bicubic resize to 224,
centre crop, OpenAI mean and std).

Options: ``head`` (default ``<models_dir>/wd_aesthetic/aes-B32-v0.pth``), and the CLIP options of
``clip_score`` for ViT-B/32: ``clip`` (default ``<models_dir>/clip/ViT-B-32-openai.safetensors``,
then OpenAI's ``ViT-B-32.pt`` in ``<models_dir>/clip`` or ``~/.cache/clip``), ``clip_arch``
(``ViT-B-32``), ``clip_quick_gelu`` (true).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import safe_torch_load
from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .clip_score import ClipScorer
from .files import WeightFile

HEAD_FILE = WeightFile(
    option="head", path="wd_aesthetic/aes-B32-v0.pth", about="the WD aesthetic classifier (a state dict)",
    hf_repo="hakurei/waifu-diffusion-v1-4", hf_file="models/aes-B32-v0.pth", approx_size="0.7 MB")
CLIP_B32_FILE = WeightFile(
    option="clip", path="clip/ViT-B-32-openai.safetensors", about="OpenAI CLIP ViT-B/32 (open_clip weights)",
    hf_repo="timm/vit_base_patch32_clip_224.openai", hf_file="open_clip_model.safetensors", approx_size="0.6 GB",
    note="OpenAI's own ViT-B-32.pt (what clip.load('ViT-B/32') keeps in ~/.cache/clip) works too")

_LAYERS = ("fc1", "fc2", "fc3")


class WdClassifier(nn.Module):
    """fc1, ReLU, fc2, ReLU, fc3, sigmoid; the sizes those of the state dict it is built from."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(i, o) for i, o in sizes)

    def forward(self, x):
        return torch.sigmoid(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x))))))


def load_wd_classifier(path: Path) -> WdClassifier:
    state = safe_torch_load(path)
    expected = {f"{layer}.{part}" for layer in _LAYERS for part in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != expected:
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ScorerError(f"wd_aesthetic: the head {path} is not the WD classifier: expected the keys "
                          f"{sorted(expected)}, found {found}")
    sizes = [tuple(state[f"{layer}.weight"].shape[::-1]) for layer in _LAYERS]
    if any(len(s) != 2 for s in sizes) or sizes[0][1] != sizes[1][0] or sizes[1][1] != sizes[2][0] or sizes[2][1] != 1:
        raise ScorerError(f"wd_aesthetic: the layers of the head {path} do not chain into one output: {sizes}")
    head = WdClassifier(sizes)
    head.load_state_dict({key: tensor.float() for key, tensor in state.items()})
    return head.eval()


@register_scorer
class WdAestheticScorer(ClipScorer):
    name = "wd_aesthetic"
    summary = "the Waifu Diffusion aesthetic classifier: how likely an anime picture is aesthetic (0-1), on CLIP ViT-B/32"
    option_defaults: ClassVar[Mapping[str, Any]] = {"head": None, "clip": None, "clip_arch": "ViT-B-32",
                                                    "clip_quick_gelu": True}
    files = (HEAD_FILE, CLIP_B32_FILE)
    fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {"clip": ("clip/ViT-B-32.pt", "~/.cache/clip/ViT-B-32.pt")}

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        self._head: WdClassifier | None = None

    def load(self) -> None:
        if self._head is not None:
            return
        head_path = self.file_path("head")
        self.file_path("clip")  # both files are there before either is read
        head = load_wd_classifier(head_path)
        backbone = self.clip_backbone()
        if head.fc1.in_features != backbone.embed_dim:
            raise ScorerError(f"wd_aesthetic: the head {head_path} expects {head.fc1.in_features}-dim embeddings "
                              f"but CLIP {self.file_path('clip')} gives {backbone.embed_dim}")
        self._head = head.to(self.device)

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        self.load()
        features = F.normalize(self.clip_backbone().encode_images([item.image for item in images]), dim=-1)
        with torch.inference_mode():
            scores = self._head(features).squeeze(-1).tolist()
        return self.finite(scores)
