"""``laion_aesthetic``: the LAION improved aesthetic predictor v2 (about 1 to 10).

The OpenAI CLIP ViT-L/14 image embedding, L2-normalised, goes through a small MLP head
(christophschuhmann/improved-aesthetic-predictor, ``simple_inference.py``): Linear 768-1024,
Dropout, Linear 1024-128, Dropout, Linear 128-64, Dropout, Linear 64-16, Linear 16-1, with no
activations. Its state dict therefore holds ``layers.{0,2,4,6,7}.{weight,bias}``; the head is
rebuilt from whatever ``layers.N`` keys the file has, with identity in the dropout gaps.

Options:

- ``head``: the head file.
  Default ``<models_dir>/laion_aesthetic/sac+logos+ava1-l14-linearMSE.pth``.
- ``clip``: the CLIP weights (see :mod:`.backbones` for the accepted files). Default
  ``<models_dir>/clip/ViT-L-14.pt``, then ``~/.cache/clip/ViT-L-14.pt``, where OpenAI's ``clip``
  package (and A1111's CLIP interrogator) keeps it.
- ``clip_arch``: the open_clip model name for a state-dict file, default ``ViT-L-14``.
- ``clip_quick_gelu``: build that model with QuickGELU, as OpenAI trained it; default true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import Problem
from .backbones import CLIP_VIT_L_14, ClipBackbone, load_open_clip_backbone
from .base import ImageToScore, ScoreContext, Scorer, ScorerError, register_scorer

HEAD_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_SOURCE = (
    "download sac+logos+ava1-l14-linearMSE.pth from "
    "https://github.com/christophschuhmann/improved-aesthetic-predictor"
)
CLIP_FILENAME = "ViT-L-14.pt"
CLIP_SOURCE = (
    "use OpenAI's ViT-L-14.pt (the file clip.load('ViT-L/14') saves in ~/.cache/clip) or "
    "open_clip_pytorch_model.bin from https://huggingface.co/timm/vit_large_patch14_clip_224.openai"
)

_HEAD_KEY = re.compile(r"^layers\.(\d+)\.(weight|bias)$")


def load_aesthetic_head(path: Path) -> nn.Sequential:
    """The MLP head in ``path``, layer sizes read from the state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ScorerError(
            f"laion_aesthetic: could not read the head {path}: {type(error).__name__}: {error}"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ScorerError(f"laion_aesthetic: the head {path} holds no state dict")

    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = _HEAD_KEY.match(str(key))
        if match is None or not isinstance(tensor, torch.Tensor):
            raise ScorerError(
                f"laion_aesthetic: unexpected entry {key!r} in the head {path}; expected only "
                f"'layers.N.weight' / 'layers.N.bias' (is this {HEAD_FILENAME}?)"
            )
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = tensor

    modules: list[nn.Module] = [nn.Identity() for _ in range(max(layers) + 1)]
    previous_out = None
    for index in sorted(layers):
        weight, bias = layers[index].get("weight"), layers[index].get("bias")
        if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise ScorerError(
                f"laion_aesthetic: layer {index} of the head {path} is not a linear layer"
            )
        out_features, in_features = weight.shape
        if previous_out is not None and in_features != previous_out:
            raise ScorerError(
                f"laion_aesthetic: layer {index} of the head {path} takes {in_features} inputs "
                f"but the layer before gives {previous_out}"
            )
        modules[index] = nn.Linear(in_features, out_features)
        previous_out = out_features
    if previous_out != 1:
        raise ScorerError(f"laion_aesthetic: the head {path} ends in {previous_out} outputs, not 1")

    head = nn.Sequential(*modules)
    head.load_state_dict({key[len("layers.") :]: tensor.float() for key, tensor in state.items()})
    return head.eval()


@register_scorer
class LaionAestheticScorer(Scorer):
    name = "laion_aesthetic"
    backbone = CLIP_VIT_L_14
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "head": None,
        "clip": None,
        "clip_arch": "ViT-L-14",
        "clip_quick_gelu": True,
    }
    # Places a user may already have OpenAI's file, looked at after <models_dir>/clip.
    clip_fallbacks: ClassVar[tuple[Path, ...]] = (
        Path("~/.cache/clip").expanduser() / CLIP_FILENAME,
    )

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        if not self.options["clip_arch"]:
            raise self.option_error(
                "clip_arch", self.options["clip_arch"], "must name an open_clip model"
            )
        self._head: nn.Sequential | None = None
        self._backbone: ClipBackbone | None = None

    def head_candidates(self) -> list[Path]:
        if self.options["head"] is not None:
            return [self.options["head"]]
        if self.models_dir is None:
            return []
        return [self.models_dir / "laion_aesthetic" / HEAD_FILENAME]

    def clip_candidates(self) -> list[Path]:
        if self.options["clip"] is not None:
            return [self.options["clip"]]
        local = [self.models_dir / "clip" / CLIP_FILENAME] if self.models_dir is not None else []
        return local + list(self.clip_fallbacks)

    def check_ready(self) -> list[str]:
        problems = []
        for what, candidates, source in (
            ("head", self.head_candidates(), HEAD_SOURCE),
            ("clip", self.clip_candidates(), CLIP_SOURCE),
        ):
            if not candidates:
                problems.append(
                    Problem("laion_aesthetic", f"no {what!r} file set and no models folder; {source}")
                )
            elif _first_file(candidates) is None:
                places = " or ".join(str(path) for path in candidates)
                problems.append(Problem("laion_aesthetic", f"{what} weights not found at {places}; {source}"))
        return problems

    def load(self) -> None:
        if self._head is not None:
            return
        problems = self.check_ready()
        if problems:
            raise ScorerError("; ".join(problems))
        head_path = _first_file(self.head_candidates())
        clip_path = _first_file(self.clip_candidates())
        head = load_aesthetic_head(head_path)

        arch, quick_gelu = self.options["clip_arch"], self.options["clip_quick_gelu"]
        key = (CLIP_VIT_L_14, arch, str(clip_path.resolve()), quick_gelu, str(self.device))
        backbone = self.backbones.get(
            key,
            lambda: load_open_clip_backbone(arch, clip_path, self.device, quick_gelu=quick_gelu),
        )
        if head[0].in_features != backbone.embed_dim:
            raise ScorerError(
                f"laion_aesthetic: the head {head_path} expects {head[0].in_features}-dim "
                f"embeddings but CLIP {clip_path} gives {backbone.embed_dim}"
            )
        self._head = head.to(self.device)
        self._backbone = backbone

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        self.load()
        features = self._backbone.encode_images([item.image for item in images])
        # As the reference inference does: a zero embedding is left as it is, not divided by 0.
        norms = features.norm(dim=-1, keepdim=True)
        norms = torch.where(norms == 0, torch.ones_like(norms), norms)
        with torch.inference_mode():
            scores = self._head(features / norms).squeeze(-1).tolist()
        if not all(math.isfinite(value) for value in scores):
            raise ScorerError(
                f"laion_aesthetic: non-finite scores {scores}; are the weights broken?"
            )
        return scores


def _first_file(candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.is_file()), None)
