"""``laion_aesthetic``: the LAION improved aesthetic predictor v2 (about 1 to 10).

The OpenAI CLIP ViT-L/14 image embedding, L2-normalised, goes through a small MLP head
(christophschuhmann/improved-aesthetic-predictor, ``simple_inference.py``): Linear 768-1024,
Dropout, Linear 1024-128, Dropout, Linear 128-64, Dropout, Linear 64-16, Linear 16-1, with no
activations. Its state dict therefore holds ``layers.{0,2,4,6,7}.{weight,bias}``; the head is
rebuilt from whatever ``layers.N`` keys the file has, with identity in the dropout gaps.

Options:

- ``head``: the head file.
  Default ``<models_dir>/laion_aesthetic/sac+logos+ava1-l14-linearMSE.pth``.
- ``clip``, ``clip_arch``, ``clip_quick_gelu``: the shared CLIP, as for ``clip_score``
  (:mod:`.clip_score`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .backbones import safe_torch_load
from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .clip_score import CLIP_FILE, ClipScorer
from .files import WeightFile

HEAD_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_FILE = WeightFile(
    option="head", path=f"laion_aesthetic/{HEAD_FILENAME}", about="the aesthetic MLP head (a state dict)",
    url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth",
    size=3714759, sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0", approx_size="3.7 MB")
# the same head architecture trained again on 200K generations people rated 1-10 (grexzen/SD-Chad)
CHAD_HEAD_FILE = WeightFile(
    option="head", path="laion_chad/chadscorer.pth", about="the Chad aesthetic MLP head (a state dict)",
    url="https://github.com/grexzen/SD-Chad/raw/main/chadscorer.pth",
    size=3714759, sha256="ba265592f419d88ad66216257d54c57eae08ae2fde0b8be167bbe7ddc09206bd", approx_size="3.7 MB")


def load_aesthetic_head(path: Path, scorer: str = "laion_aesthetic", prefix: str = "layers") -> nn.Sequential:
    """The MLP head in ``path``: linear layers ``<prefix>.N`` (identity in the gaps, where the
    original has dropout), sizes read from the state dict; ``scorer`` names the scorer in errors."""
    try:
        state = safe_torch_load(path)
    except ScorerError:
        raise
    except Exception as error:
        raise ScorerError(
            f"{scorer}: could not read the head {path}: {type(error).__name__}: {error}"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return head_from_state(state, path, scorer, prefix)


def head_from_state(state: Any, path: Path, scorer: str, prefix: str = "layers") -> nn.Sequential:
    """The linear-stack head of a state dict read from ``path`` (see :func:`load_aesthetic_head`)."""
    head_key = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(weight|bias)$")
    if not isinstance(state, dict) or not state:
        raise ScorerError(f"{scorer}: the head {path} holds no state dict")

    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = head_key.match(str(key))
        if match is None or not isinstance(tensor, torch.Tensor):
            raise ScorerError(
                f"{scorer}: unexpected entry {key!r} in the head {path}; expected only "
                f"'{prefix}.N.weight' / '{prefix}.N.bias' (is this the {scorer} head?)"
            )
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = tensor

    modules: list[nn.Module] = [nn.Identity() for _ in range(max(layers) + 1)]
    previous_out = None
    for index in sorted(layers):
        weight, bias = layers[index].get("weight"), layers[index].get("bias")
        if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise ScorerError(
                f"{scorer}: layer {index} of the head {path} is not a linear layer"
            )
        out_features, in_features = weight.shape
        if previous_out is not None and in_features != previous_out:
            raise ScorerError(
                f"{scorer}: layer {index} of the head {path} takes {in_features} inputs "
                f"but the layer before gives {previous_out}"
            )
        modules[index] = nn.Linear(in_features, out_features)
        previous_out = out_features
    if previous_out != 1:
        raise ScorerError(f"{scorer}: the head {path} ends in {previous_out} outputs, not 1")

    head = nn.Sequential(*modules)
    head.load_state_dict({key[len(prefix) + 1:]: tensor.float() for key, tensor in state.items()})
    return head.eval()


@register_scorer
class LaionAestheticScorer(ClipScorer):
    name = "laion_aesthetic"
    summary = "LAION improved aesthetic predictor v2: how beautiful (about 1-10), on CLIP ViT-L/14"
    option_defaults: ClassVar[Mapping[str, Any]] = {"head": None, **ClipScorer.option_defaults}
    files = (HEAD_FILE, CLIP_FILE)
    native_range = (1.0, 10.0)

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        self._head: nn.Sequential | None = None

    def load(self) -> None:
        if self._head is not None:
            return
        head_path = self.file_path("head")
        self.file_path("clip")  # both files are there before either is read
        head = load_aesthetic_head(head_path, self.name)
        backbone = self.clip_backbone()
        if head[0].in_features != backbone.embed_dim:
            raise ScorerError(
                f"{self.name}: the head {head_path} expects {head[0].in_features}-dim "
                f"embeddings but CLIP {self.file_path('clip')} gives {backbone.embed_dim}"
            )
        self._head = head.to(self.device)

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        self.load()
        features = self.clip_backbone().encode_images([item.image for item in images])
        # As the reference inference does: a zero embedding is left as it is, not divided by 0.
        norms = features.norm(dim=-1, keepdim=True)
        norms = torch.where(norms == 0, torch.ones_like(norms), norms)
        with torch.inference_mode():
            scores = self._head(features / norms).squeeze(-1).tolist()
        return self.finite(scores)


@register_scorer
class LaionChadScorer(LaionAestheticScorer):
    name = "laion_chad"
    summary = "the Chad aesthetic head (LAION's, retrained on people's 1-10 ratings of generations), on CLIP ViT-L/14"
    files = (CHAD_HEAD_FILE, CLIP_FILE)

