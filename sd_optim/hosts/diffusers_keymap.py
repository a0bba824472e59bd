"""Per-key map between checkpoint (LDM / SGM) key names and diffusers module parameters.

The map is *derived*, not typed: diffusers' own single-file converters are run on a probe state
dict that holds every key of the sd-mecha model config, each filled with small tensors of unique
integers. Every tensor the converters output is traced back to its source key by value, and the
view that produced it is classified as one of three width-independent operations:

- ``view``: same elements, possibly reshaped (VAE attention conv-1x1 <-> linear),
- ``transpose``: a transposed matrix (CLIP-G ``text_projection``),
- ``chunk``: the ``index``-th of ``parts`` equal row blocks (CLIP-G fused ``in_proj`` -> q/k/v).

Probe widths are shrunk, but the key names (which fix the depth) and the ranks are those of the
real model, so the same map is exact for full-size checkpoints. Converting a key is then a dict
lookup plus a slice / reshape / transpose, cheap enough for every write.
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

SUPPORTED_CONFIGS = ("sd1-ldm", "sdxl-sgm")

# Components whose keys a diffusers pipeline has no module for (EMA copies, DDPM buffers).
_SKIPPED_COMPONENTS = ("ema", "scheduler")


@dataclass(frozen=True)
class Target:
    """One diffusers tensor fed by a checkpoint key."""

    component: str  # pipeline attribute: unet, vae, text_encoder, text_encoder_2
    name: str  # key in that module's state_dict
    op: str  # "view", "transpose" or "chunk"
    index: int = 0
    parts: int = 1


@dataclass(frozen=True)
class KeyRule:
    key: str
    targets: tuple[Target, ...]
    ckpt_ndim: int  # rank of the tensor in the checkpoint (>= rank of a view's target)


def _probe_shape(shape: torch.Size) -> tuple[int, ...]:
    # Keep ranks, keep tiny dims, shrink big ones by a common factor so that proportions the
    # converters rely on (in_proj rows == 3 * text_projection rows) survive; >= 2 keeps a
    # transpose distinguishable from a plain view.
    return tuple(s if s <= 4 else max(2, s // 64) for s in shape)


def _converted(config_id: str, probe: dict[str, torch.Tensor], unet_config, vae_config):
    from diffusers.loaders import single_file_utils as sfu

    out = {
        "unet": sfu.convert_ldm_unet_checkpoint(probe, unet_config),
        "vae": sfu.convert_ldm_vae_checkpoint(probe, vae_config),
        "text_encoder": sfu.convert_ldm_clip_checkpoint(probe),
    }
    if config_id == "sdxl-sgm":
        prefix = "conditioner.embedders.1.model."
        dummy = SimpleNamespace(config=SimpleNamespace(projection_dim=None))
        out["text_encoder_2"] = sfu.convert_open_clip_checkpoint(dummy, probe, prefix=prefix)
    return out


def _classify(src: torch.Tensor, out: torch.Tensor, first: int) -> tuple[str, int, int]:
    if out.numel() == src.numel():
        if torch.equal(src.reshape(out.shape), out):
            return "view", 0, 1
        if src.ndim == 2 and out.shape == src.T.shape and torch.equal(src.T, out):
            return "transpose", 0, 1
    elif src.ndim >= 1 and out.ndim == src.ndim and out.shape[1:] == src.shape[1:]:
        rows = out.shape[0]
        parts = src.shape[0] // rows
        index = first // out.numel()
        if (parts * rows == src.shape[0] and index < parts
                and torch.equal(src[index * rows : (index + 1) * rows], out)):
            return "chunk", index, parts
    raise RuntimeError(f"cannot express converter output of shape {tuple(out.shape)} "
                       f"as a view of a tensor of shape {tuple(src.shape)}")


def _config_fingerprint(cfg: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    return json.dumps({f: cfg.get(f) for f in fields}, sort_keys=True, default=str)


_UNET_FIELDS = ("layers_per_block", "down_block_types", "up_block_types",
                "class_embed_type", "addition_embed_type", "num_class_embeds")
_VAE_FIELDS = ("down_block_types", "up_block_types")


def derive_keymap(config_id: str, unet_config: Mapping[str, Any],
                  vae_config: Mapping[str, Any]) -> dict[str, KeyRule]:
    """The map for ``config_id`` given the diffusers UNet and VAE configs (only the fields that
    shape the key names matter: block counts, layers per block, embedding types)."""
    if config_id not in SUPPORTED_CONFIGS:
        raise ValueError(f"no diffusers key map for model config {config_id!r}; "
                         f"supported: {', '.join(SUPPORTED_CONFIGS)}")
    return _derive(config_id, _config_fingerprint(unet_config, _UNET_FIELDS),
                   _config_fingerprint(vae_config, _VAE_FIELDS))


@functools.lru_cache(maxsize=8)
def _derive(config_id: str, unet_fp: str, vae_fp: str) -> dict[str, KeyRule]:
    from sd_mecha.extensions import model_configs

    config = model_configs.resolve(config_id)
    probe: dict[str, torch.Tensor] = {}
    starts: list[int] = []
    names: list[str] = []
    offset = 0
    for comp_name, comp in config.components().items():
        if comp_name in _SKIPPED_COMPONENTS:
            continue
        for key, meta in comp.keys().items():
            shape = _probe_shape(meta.shape)
            n = 1
            for s in shape:
                n *= s
            probe[key] = torch.arange(offset, offset + n, dtype=torch.int64).reshape(shape)
            starts.append(offset)
            names.append(key)
            offset += n
    order = sorted(range(len(starts)), key=starts.__getitem__)
    starts = [starts[i] for i in order]
    names = [names[i] for i in order]

    unet_cfg = json.loads(unet_fp)
    vae_cfg = json.loads(vae_fp)
    targets: dict[str, list[Target]] = {}
    for component, converted in _converted(config_id, probe, unet_cfg, vae_cfg).items():
        for name, out in converted.items():
            if out is None or out.numel() == 0:
                continue
            first = int(out.reshape(-1)[0])
            src_key = names[bisect.bisect_right(starts, first) - 1]
            src = probe[src_key]
            op, index, parts = _classify(src, out, first - int(src.reshape(-1)[0]))
            targets.setdefault(src_key, []).append(Target(component, name, op, index, parts))

    rules = {}
    for key, tgts in targets.items():
        tgts.sort(key=lambda t: t.index)
        rules[key] = KeyRule(key, tuple(tgts), probe[key].ndim)
    return rules


# --- applying a rule -------------------------------------------------------------------------

def ckpt_shape(rule: KeyRule, target_shapes: list[torch.Size]) -> torch.Size:
    """Shape of the checkpoint tensor, given the shapes of the diffusers tensors it feeds."""
    t = rule.targets[0]
    shape = tuple(target_shapes[0])
    if t.op == "transpose":
        return torch.Size(shape[::-1])
    if t.op == "chunk":
        return torch.Size((shape[0] * t.parts, *shape[1:]))
    return torch.Size(shape + (1,) * (rule.ckpt_ndim - len(shape)))


def split(rule: KeyRule, value: torch.Tensor, target_shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Views of a checkpoint-layout ``value`` in the layout of each target (no copy)."""
    out = []
    for t, shape in zip(rule.targets, target_shapes):
        if t.op == "view":
            out.append(value.reshape(shape))
        elif t.op == "transpose":
            out.append(value.T)
        else:
            rows = value.shape[0] // t.parts
            out.append(value[t.index * rows : (t.index + 1) * rows])
    return out


def join(rule: KeyRule, tensors: list[torch.Tensor]) -> torch.Tensor:
    """The checkpoint-layout tensor from the target tensors (a view unless it is a fused key)."""
    t = rule.targets[0]
    if t.op == "chunk":
        return torch.cat(tensors, dim=0)
    if t.op == "transpose":
        return tensors[0].T
    return tensors[0].reshape(ckpt_shape(rule, [tensors[0].shape]))


def to_checkpoint(rules: Mapping[str, KeyRule],
                  state_dicts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Checkpoint-keyed tensors from per-component diffusers state dicts (keys whose targets
    are all present; the rest are skipped)."""
    out = {}
    for key, rule in rules.items():
        try:
            tensors = [state_dicts[t.component][t.name] for t in rule.targets]
        except KeyError:
            continue
        out[key] = join(rule, tensors).contiguous()
    return out
