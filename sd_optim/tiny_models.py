"""Tiny random Stable Diffusion checkpoints with the real topology and real key names.

The depth of every stack (UNet levels, resnets and transformer blocks per level, VAE levels,
CLIP layers) and the places where channel counts change are those of SD1.5 and SDXL base, so
the exported files carry exactly the LDM (``sd1-ldm``) / SGM (``sdxl-sgm``) key names and ranks
sd-mecha expects; only widths are tiny. Weights are fp32 (CPU-friendly, exact round trips).

Everything is built offline: the diffusers config folder (with a CLIP tokenizer made from
open_clip's shipped BPE vocabulary) lets ``from_single_file(ckpt, config=folder,
local_files_only=True)`` load the files without the hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sd_optim.hosts import diffusers_keymap as km

TINY_SIZE = 64  # image side in pixels; the latent side is TINY_SIZE // 8
DTYPE = torch.float32
_VERSION = 2  # bump when the weights a seed produces change (cached files get new names)

_TEXT_WIDTH = 32
# CLIP-G must be wider than CLIP-L: diffusers tells the two SDXL text encoders apart by their
# position-embedding width, and with equal widths it silently loads CLIP-L into text_encoder_2.
_TEXT_WIDTH_G = 48

_SD1_UNET: dict[str, Any] = {
    "sample_size": TINY_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    # channels change at the same levels as SD1.5's (320, 640, 1280, 1280): same shortcut keys
    "block_out_channels": [8, 16, 32, 32],
    "layers_per_block": 2,
    "cross_attention_dim": _TEXT_WIDTH,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}

_SDXL_UNET: dict[str, Any] = {
    "sample_size": TINY_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [8, 16, 32],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [2, 2, 4],
    "cross_attention_dim": _TEXT_WIDTH + _TEXT_WIDTH_G,  # CLIP-L and CLIP-G states, concatenated
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": _TEXT_WIDTH_G + 6 * 8,  # pooled CLIP-G + 6 time ids
    "norm_num_groups": 4,
}

_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 32, 32],  # as (128, 256, 512, 512)
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": TINY_SIZE,
}

_CLIP_COMMON: dict[str, Any] = {
    "vocab_size": 49408, "num_attention_heads": 4, "max_position_embeddings": 77,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}

_SD1_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    "prediction_type": "epsilon", "timestep_spacing": "leading",
}
_SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
    "interpolation_type": "linear", "prediction_type": "epsilon", "use_karras_sigmas": False,
    "timestep_spacing": "leading", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "clip_sample": False,
}


def _arch(arch: str) -> str:
    if arch not in ("sd1", "sdxl"):
        raise ValueError(f"unknown tiny architecture {arch!r}; use 'sd1' or 'sdxl'")
    return arch


def config_id(arch: str) -> str:
    return {"sd1": "sd1-ldm", "sdxl": "sdxl-sgm"}[_arch(arch)]


def unet_config(arch: str) -> dict[str, Any]:
    return dict(_SD1_UNET if _arch(arch) == "sd1" else _SDXL_UNET)


def vae_config(arch: str) -> dict[str, Any]:
    cfg = dict(_VAE)
    cfg["scaling_factor"] = 0.18215 if _arch(arch) == "sd1" else 0.13025
    return cfg


def _text_configs(arch: str):
    from transformers import CLIPTextConfig

    cfgs = {"text_encoder": CLIPTextConfig(
        num_hidden_layers=12, hidden_act="quick_gelu", hidden_size=_TEXT_WIDTH,
        intermediate_size=2 * _TEXT_WIDTH, projection_dim=_TEXT_WIDTH, **_CLIP_COMMON)}
    if _arch(arch) == "sdxl":
        # projection_dim == hidden_size, as in SDXL: diffusers splits CLIP-G's fused in_proj
        # by text_projection's row count
        cfgs["text_encoder_2"] = CLIPTextConfig(
            num_hidden_layers=32, hidden_act="gelu", hidden_size=_TEXT_WIDTH_G,
            intermediate_size=2 * _TEXT_WIDTH_G, projection_dim=_TEXT_WIDTH_G, **_CLIP_COMMON)
    return cfgs


# --- tokenizer from open_clip's BPE vocabulary --------------------------------------------------

def _byte_alphabet() -> list[str]:
    # The reversible byte -> printable-character table every CLIP BPE vocabulary starts with.
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _bpe_merges() -> list[str]:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is needed for its BPE vocabulary (bpe_simple_vocab_16e6.txt.gz)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path) as f:
        lines = f.read().decode("utf-8").split("\n")
    return lines[1 : 49152 - 256 - 2 + 1]


def _write_tokenizer(folder: Path, pad_token: str) -> None:
    merges = _bpe_merges()
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    _write_text(folder / "vocab.json", json.dumps({t: i for i, t in enumerate(tokens)}))
    _write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token,
    })
    _write_json(folder / "special_tokens_map.json", {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token,
    })


# --- config folder ----------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    # Atomic and skip-if-same, so concurrent or repeated builds of one folder are harmless.
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def tiny_diffusers_config(arch: str, folder: Path) -> Path:
    """Write (or reuse) a diffusers config folder for the tiny ``arch`` and return it."""
    folder = Path(folder)
    stamp = folder / ".sd_optim_tiny"
    if stamp.is_file() and stamp.read_text() == f"{arch} v{_VERSION}":
        return folder
    version = "0.31.0"
    sdxl = _arch(arch) == "sdxl"
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
        "_diffusers_version": version,
        "scheduler": ["diffusers", "EulerDiscreteScheduler" if sdxl else "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if sdxl:
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"],
                     force_zeros_for_empty_prompt=True,
                     image_encoder=[None, None], feature_extractor=[None, None])
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None],
                     requires_safety_checker=False, image_encoder=[None, None])
    _write_json(folder / "model_index.json", index)
    _write_json(folder / "unet" / "config.json",
                {"_class_name": "UNet2DConditionModel", "_diffusers_version": version,
                 **unet_config(arch)})
    _write_json(folder / "vae" / "config.json",
                {"_class_name": "AutoencoderKL", "_diffusers_version": version, **vae_config(arch)})
    _write_json(folder / "scheduler" / "scheduler_config.json",
                {"_diffusers_version": version, **(_SDXL_SCHEDULER if sdxl else _SD1_SCHEDULER)})
    for name, cfg in _text_configs(arch).items():
        d = cfg.to_dict()
        d["architectures"] = ["CLIPTextModelWithProjection" if name.endswith("_2") else "CLIPTextModel"]
        _write_json(folder / name / "config.json", d)
    _write_tokenizer(folder / "tokenizer", "<|endoftext|>")
    if sdxl:
        _write_tokenizer(folder / "tokenizer_2", "!")
    _write_text(stamp, f"{arch} v{_VERSION}")
    return folder


# --- weights ----------------------------------------------------------------------------------

def _randomize_norms_and_biases(module: torch.nn.Module, gen: torch.Generator) -> None:
    # Default inits leave norm biases (and CLIP's linear biases) at exactly zero and norm weights
    # at one; real WebUIs then hit 0/0 in prompt emphasis (NaN conditioning). Jitter them all.
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def tiny_components(arch: str, seed: int) -> dict[str, torch.nn.Module]:
    """The tiny diffusers modules for ``arch`` with seeded random weights (fp32, CPU, eval)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        comps: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel.from_config(unet_config(arch)),
            "vae": AutoencoderKL.from_config(vae_config(arch)),
        }
        classes = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
        for name, cfg in _text_configs(arch).items():
            comps[name] = classes[name](cfg)
    for m in comps.values():
        _randomize_norms_and_biases(m, gen)
        m.eval()
    return comps


def _state_dict_with_prefix(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # position_ids is a buffer, persistent in transformers 4.30 and not in 4.46: leave it out so
    # the files are the same whichever version built them
    sd = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    # transformers 5 drops the "text_model." prefix from CLIPTextModel's state dict
    if hasattr(module, "text_model") and not any(k.startswith("text_model.") for k in sd):
        sd = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in sd.items()}
    return sd


def build_tiny_checkpoint(arch: str, path: Path, seed: int) -> Path:
    """Write a tiny ``arch`` ("sd1" / "sdxl") checkpoint with LDM / SGM keys (fp32) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    comps = tiny_components(arch, seed)
    rules = km.derive_keymap(config_id(arch), unet_config(arch), vae_config(arch))
    sds = {name: _state_dict_with_prefix(m) for name, m in comps.items()}
    tensors = km.to_checkpoint(rules, sds)
    if arch == "sdxl":
        # in real SDXL files; diffusers has no parameter for it
        tensors["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052, dtype=DTYPE)
    tensors = {k: v.to(DTYPE).contiguous() for k, v in sorted(tensors.items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    save_file(tensors, tmp, metadata={"format": "pt", "sd_optim_tiny": f"{arch} seed={seed}"})
    os.replace(tmp, path)
    return path


def tiny_model_set(arch: str, folder: Path, n: int = 2, seed: int = 0) -> list[Path]:
    """``n`` tiny checkpoints with seeds ``seed .. seed+n-1`` in ``folder`` (built once, reused)."""
    folder = Path(folder)
    paths = []
    for i in range(n):
        p = folder / f"tiny-{_arch(arch)}-v{_VERSION}-s{seed + i}.safetensors"
        if not p.is_file():
            build_tiny_checkpoint(arch, p, seed + i)
        paths.append(p)
    return paths
