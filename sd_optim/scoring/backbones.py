"""Shared image backbones, loaded from local files only.

``clip-vit-l-14`` is OpenAI CLIP ViT-L/14 at 224 px through open_clip. LAION aesthetic v2 and
CLIP score read its image embedding; :class:`ClipBackbone` remembers the last batch it encoded,
so two scorers scoring the same batch share one forward pass as well as one copy of the weights.

Accepted weight files:

- OpenAI's TorchScript archive ``ViT-L-14.pt`` (what ``clip.load("ViT-L/14")`` saves in
  ``~/.cache/clip``), opened with ``torch.jit.load`` (not ``open_clip.load_openai_model``,
  whose fallback would unpickle a file that is not an archive without weights_only).
- An open_clip state dict (``open_clip_pytorch_model.bin`` of the Hugging Face repo
  ``timm/vit_large_patch14_clip_224.openai``, or any ``.pt``/``.pth``/``.bin``), always read
  with ``torch.load(weights_only=True)`` (never through open_clip's loader, which leaves
  weights_only to torch's default: False before torch 2.6, so a pickle could run code).
- The same state dict as ``.safetensors`` (open_clip 2.20 cannot read those itself).

OpenAI's CLIP was trained with QuickGELU, which open_clip's ``ViT-L-14`` config does not use:
for a state dict, ``quick_gelu=True`` must be passed or every embedding is slightly off.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .base import ScorerError

logger = logging.getLogger(__name__)

CLIP_VIT_L_14 = "clip-vit-l-14"

# Bounds memory on small GPUs; a trial's batch is usually smaller than this anyway.
_ENCODE_CHUNK = 16
_TEXT_CACHE = 1024  # prompts whose text embedding a backbone keeps


@dataclass
class ClipBackbone:
    """An open_clip model with its preprocessing, on one device."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None
    _last_images: tuple = field(default=(), repr=False)
    _last_features: torch.Tensor | None = field(default=None, repr=False)
    _texts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    def encode_images(self, images: Sequence[Any], *, remember: bool = True) -> torch.Tensor:
        """Raw (not normalised) float32 image embeddings, (N, embed_dim), on ``device``.

        The last batch is remembered by object identity (unless ``remember`` is false: a side
        batch, such as reference pictures, must not evict the trial's); the references it keeps
        make sure an id cannot be reused by a different image while it is cached. The returned
        tensor may be shared with other scorers: never modify it in place.
        """
        images = tuple(images)
        if (
            self._last_features is not None
            and len(images) == len(self._last_images)
            and all(a is b for a, b in zip(images, self._last_images))
        ):
            return self._last_features
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), _ENCODE_CHUNK):
                pixels = torch.stack(
                    [self.preprocess(im) for im in images[start : start + _ENCODE_CHUNK]]
                )
                pixels = pixels.to(device=self.device, dtype=self.dtype)
                chunks.append(self.model.encode_image(pixels).float())
        features = (
            torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim, device=self.device)
        )
        if remember:
            self._last_images, self._last_features = images, features
        return features


    def forget(self) -> None:
        """Drop the remembered batch and prompt embeddings (before the model leaves the device)."""
        self._last_images, self._last_features = (), None
        self._texts.clear()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw float32 text embeddings, (N, embed_dim), on ``device``. A prompt is encoded once
        per backbone (trials repeat their prompts); the cache holds up to ``_TEXT_CACHE`` texts."""
        if self.tokenizer is None:
            raise ScorerError("this CLIP has no text tower loaded")
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            with torch.inference_mode():
                tokens = self.tokenizer(new).to(self.device)
                encoded = self.model.encode_text(tokens).float()
            if len(self._texts) + len(new) > _TEXT_CACHE:
                self._texts.clear()
            self._texts.update(zip(new, encoded))
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.stack([self._texts[t] for t in texts])


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files holding a ``constants.pkl`` record."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_open_clip_backbone(
    arch: str, path: Path, device: torch.device, *, quick_gelu: bool = True
) -> ClipBackbone:
    """Build open_clip model ``arch`` with the weights in ``path``, ready for inference."""
    import open_clip  # deferred: importing it costs seconds (timm), and only this needs it

    path = Path(path)
    if not path.is_file():
        raise ScorerError(f"CLIP weights file {path} does not exist")
    # OpenAI's own inference runs CLIP in fp16 on CUDA; on a CPU fp16 is slow or unsupported.
    precision = "fp16" if device.type == "cuda" else "fp32"
    logger.info("loading CLIP %s from %s on %s", arch, path, device)
    try:
        if is_torchscript_archive(path):
            # The archive carries its own architecture (QuickGELU included); ``arch`` is unused.
            model = _openai_model(path, precision, device)
        else:
            if open_clip.get_model_config(arch) is None:
                close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
                raise ScorerError(
                    f"open_clip has no model config named {arch!r} (close: {close}); "
                    f"set the scorer's architecture option to an open_clip model name"
                )
            # never ``pretrained=path``: open_clip would unpickle it without weights_only
            state_dict = read_state_dict(path)
            model = open_clip.create_model(
                arch, precision=precision, device=device, force_quick_gelu=quick_gelu
            )
            _load_into(model, state_dict)
    except ScorerError:
        raise
    except Exception as error:
        raise ScorerError(
            f"could not load CLIP {arch} weights from {path}: {type(error).__name__}: {error}"
        ) from error
    model.eval()
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
    )
    # fp16 conversion leaves some parameters (class embedding) in fp32: the patch
    # convolution's dtype is what the pixels must match.
    first_layer = getattr(model.visual, "conv1", None)
    dtype = first_layer.weight.dtype if first_layer is not None else next(model.parameters()).dtype
    context = int(getattr(model, "context_length", 77) or 77)
    tokenizer = open_clip.get_tokenizer(arch) if open_clip.get_model_config(arch) else open_clip.tokenize
    return ClipBackbone(model=model, preprocess=preprocess, device=device, dtype=dtype,
                        tokenizer=lambda texts: tokenizer(texts, context_length=context))


def safe_torch_load(path: Path) -> Any:
    """A pickled file's tensors, never its code: ``torch.load(weights_only=True)`` whatever the
    torch version's default (False before 2.6, and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` flips it)."""
    if "weights_only" not in inspect.signature(torch.load).parameters:  # torch < 1.13
        raise ScorerError(
            f"torch {torch.__version__} cannot open {path} safely (it has no weights_only); "
            "convert the file to .safetensors or update torch"
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise damaged(path, error) from None
    except pickle.UnpicklingError as error:
        raise ScorerError(
            f"{path} holds more than tensors (Python objects a pickle would run), so it is not "
            "loaded; use a plain state dict or a .safetensors file "
            f"({str(error).splitlines()[0][:200]})"
        ) from None


def damaged(path: Path, error: BaseException) -> ScorerError:
    """A weight file that cannot be read: cut short by a download, or damaged."""
    return ScorerError(f"could not read {path} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                       "the file is incomplete or damaged: delete it and download it again "
                       "(python -m sd_optim scorers download NAME), or put a good copy there")


def read_state_dict(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a weights-only pickle, unwrapped the way open_clip's
    own ``load_state_dict`` does (a ``state_dict`` entry; DDP's ``module.`` key prefix). A
    safetensors file is read straight onto ``device`` (a large one then never sits in RAM)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state_dict: Any = load_file(str(path), device=device)
        except Exception as error:  # noqa: BLE001 - safetensors' error type differs between versions
            raise damaged(path, error) from None
    else:
        state_dict = safe_torch_load(path)
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
            state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not state_dict:
        raise ScorerError(f"{path} holds no state dict")
    if all(str(key).startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def _load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """What open_clip's ``load_checkpoint`` does with a state dict, minus reading the file."""
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed

    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    resize_pos_embed(state_dict, model)
    model.load_state_dict(state_dict)


def _openai_model(path: Path, precision: str, device: torch.device) -> torch.nn.Module:
    """OpenAI's TorchScript archive as an open_clip model. Not ``open_clip.load_openai_model``:
    when ``torch.jit.load`` fails, that falls back to unpickling the file without weights_only."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import build_model_from_openai_state_dict, get_cast_dtype

    try:
        # TorchScript's own loader: it rebuilds tensors and TorchScript code, never Python objects
        archive = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise ScorerError(
            f"{path} is not a TorchScript archive torch can open "
            f"({str(error).splitlines()[0][:200]}); use OpenAI's ViT-L-14.pt or a state dict"
        ) from None
    model = build_model_from_openai_state_dict(archive.state_dict(), cast_dtype=get_cast_dtype(precision))
    model = model.to(device)
    if precision != "fp16":
        model.float()
    model.visual.image_mean, model.visual.image_std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return model
