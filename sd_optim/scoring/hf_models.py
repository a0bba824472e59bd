"""Hugging Face transformers models for scorers, built from a local folder and never from the hub.

A folder holds the model's ``config.json`` and its weights (``model.safetensors``, or a
``pytorch_model.bin`` read with ``weights_only=True``); the model is built from the config and
the weights loaded into it here, not by ``from_pretrained``, which in the transformers the
WebUIs ship (4.30) unpickles ``.bin`` files without ``weights_only``. A model class this
transformers lacks (SigLIP before 4.37) is named with the version that has it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch

from .backbones import read_state_dict
from .base import Scorer, ScorerError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelScorer(Scorer):
    """A scorer whose models load once per (files, device) into the scorers' shared cache: a
    subclass names the options whose files they come from and builds them in :meth:`build`."""

    model_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options, *, models_dir, device, backbones) -> None:
        super().__init__(options, models_dir=models_dir, device=device, backbones=backbones)
        self._parts: tuple[Any, ...] | None = None

    def build(self) -> tuple[Any, ...]:
        """The models (and processors) the scorer runs, from its files."""
        raise NotImplementedError

    def parts(self) -> tuple[Any, ...]:
        if self._parts is None:
            files = [str(self.file_path(option).resolve()) for option in self.model_options]
            self._parts = self.backbones.get((self.name, *files, str(self.device)), self.build)
        return self._parts

    def load(self) -> None:
        self.parts()


def transformers_class(name: str, scorer: str, since: str = "") -> Any:
    """``transformers.<name>``, or a ScorerError saying which transformers has it."""
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        needs = f" (transformers {since} or newer)" if since else ""
        raise ScorerError(f"{scorer}: needs {name}{needs}, which transformers {transformers.__version__} "
                          "here does not have")
    return cls


def missing_class(name: str, since: str = "") -> str:
    """Why a scorer needing ``transformers.<name>`` cannot run here; "" when it can."""
    try:
        transformers_class(name, "", since)
    except ScorerError as error:
        return str(error).lstrip(": ")
    return ""


def weights_in(folder: Path) -> Path | None:
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def load_model(class_name: str, folder: Path, device: torch.device, scorer: str, since: str = "") -> Any:
    """The model ``transformers.<class_name>`` in ``folder`` (its config and weights), in eval
    mode on ``device`` (half precision on CUDA). Keys of other parts of a larger checkpoint (the text tower of a CLIP,
    for a vision model) are left aside; a key the model needs and the file lacks is an error."""
    cls = transformers_class(class_name, scorer, since)
    weights = weights_in(folder)
    if weights is None:
        raise ScorerError(f"{scorer}: no {' or '.join(WEIGHT_FILES)} in {folder}")
    try:
        config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
        # a vision (or text) model read from a whole CLIP's config: the projection is the CLIP's
        top = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if "projection_dim" in top and hasattr(config, "projection_dim"):
            config.projection_dim = top["projection_dim"]
        model = cls(config)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ScorerError(f"{scorer}: could not build {class_name} from {folder / 'config.json'}: {error}") from error
    state = read_state_dict(weights)
    missing, _unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]  # a buffer, not a weight
    if missing:
        raise ScorerError(f"{scorer}: {weights} lacks {len(missing)} weights {class_name} needs, e.g. "
                          f"{', '.join(missing[:4])}; is it the right model?")
    return on_device(model, device)


def on_device(model: Any, device: torch.device) -> Any:
    """``model`` in eval mode on ``device``, in half precision on CUDA (as the scorers' authors
    run them on GPUs; the small heads after it stay in float32)."""
    model = model.to(device).eval()
    return model.half() if device.type == "cuda" else model


def pixel_batch(images: list[Any], processor: Any, model: Any) -> torch.Tensor:
    """The images (``ImageToScore``) through an image processor, on the model's device and dtype."""
    pixels = processor(images=[item.image.convert("RGB") for item in images], return_tensors="pt")["pixel_values"]
    weight = next(model.parameters())
    return pixels.to(weight.device, weight.dtype)


def image_text_batch(images: list[Any], processor: Any, tokenizer: Any, model: Any, max_length: int) -> dict:
    """The model's inputs for the images and their prompts: ``pixel_values``, ``input_ids`` and
    ``attention_mask`` (prompts padded to the longest, cut at ``max_length`` tokens)."""
    text = tokenizer([item.prompt for item in images], padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")
    device = next(model.parameters()).device
    return {"pixel_values": pixel_batch(images, processor, model), "input_ids": text["input_ids"].to(device),
            "attention_mask": text["attention_mask"].to(device)}


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device: no memory and no random
    initialisation (seconds for a 7B model), to be replaced by the checkpoint's tensors with
    ``load_state_dict(..., assign=True)``. Buffers (rotary frequencies) are built for real."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module: torch.nn.Module, name: str, param: Any) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def load_processor(class_name: str, folder: Path, scorer: str, since: str = "") -> Any:
    """``transformers.<class_name>`` (an image processor or tokenizer) from the files in ``folder``."""
    cls = transformers_class(class_name, scorer, since)
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ScorerError(f"{scorer}: could not read {class_name} from {folder}: {error}") from error
