"""Checks on the input checkpoints before a run: present, and of the loaded model's architecture."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sd_mecha.extensions import model_configs

from ..config import RunConfig
from ..errors import ConfigError, Problem
from .tensor_files import TensorEntry, read_header


def safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """The tensor entries of a ``.safetensors`` file, checked against the file's length.

    ValueError when it is not one, or when its data does not match its header: every trial would
    fail on it otherwise."""
    return read_header(path).entries


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a ``.safetensors`` header (ValueError when the file is not one)."""
    return list(safetensors_header(path))


def infer_model_config(path: Path) -> str | None:
    """The sd-mecha model config whose keys best match the file's (by key names only)."""
    keys = set(safetensors_keys(path))
    best, best_score = None, 0.0
    for cfg in model_configs.get_all():
        if "blocks" in cfg.identifier or cfg.identifier == "singleton-mecha":
            continue
        cfg_keys = set(cfg.keys())
        if not cfg_keys:
            continue
        score = len(keys & cfg_keys) / len(cfg_keys)
        if score > best_score:
            best, best_score = cfg.identifier, score
    return best if best_score >= 0.1 else None


def lora_config(path: Path) -> str:
    """The sd-mecha LoRA config (``sd1-kohya_kohya_lora``, ...) whose keys the file's match best.

    ValueError naming what the file is instead: a full checkpoint, or keys no LoRA format has."""
    keys = set(safetensors_keys(path))
    best, best_hits = None, 0
    for cfg in model_configs.get_all_aux():
        if not cfg.identifier.endswith("_lora"):
            continue
        hits = len(keys & set(cfg.keys()))
        if hits > best_hits:
            best, best_hits = cfg.identifier, hits
    # sd-mecha's own inference takes a config matching >= 10% of the keys and skips the rest
    if best is not None and best_hits >= 0.1 * len(keys):
        return best
    full = infer_model_config(path)
    what = (f"a full {full} checkpoint, not a LoRA (list it under models: to merge it)" if full
            else "not a LoRA format sd-mecha reads (kohya lora_unet_…/lora_te…/lora_vae_… keys "
                 "with .lora_down/.lora_up/.alpha, or LyCORIS)")
    raise ValueError(f"{Path(path).name} is {what}")


def _arch(config_id: str) -> str:
    return config_id.split("-")[0]  # "sd1-ldm", "sd1-kohya_kohya_lora" -> "sd1"


def check_files(config: RunConfig) -> None:
    """Every input file exists, is a format we load and holds the data its header describes;
    before any model is loaded."""
    problems = []
    for i, m in enumerate(config.models):
        path = config.resolve_path(m.path)
        if not path.is_file():
            problems.append(Problem(f"models[{i}].path", "no such file", str(path)))
        elif path.suffix != ".safetensors":
            problems.append(Problem(f"models[{i}].path", "only .safetensors checkpoints are supported", str(path)))
        else:
            problems += _header_problems(f"models[{i}].path", path)
    for i, lo in enumerate(config.loras):
        problems += _lora_problems(f"loras[{i}].path", config.resolve_path(lo.path), lo.path)
    if config.mode == "recipe" and not config.resolve_path(config.recipe.path).is_file():
        problems.append(Problem("recipe.path", "no such file", config.recipe.path))
    if problems:
        raise ConfigError(problems)


def _header_problems(field: str, path: Path) -> list[str]:
    try:
        safetensors_header(path)
    except ValueError as e:
        return [f"{field}: {e}, got {str(path)!r}"]
    except OSError as e:
        return [f"{field}: cannot read it: {e.strerror or e}, got {str(path)!r}"]
    return []


def _lora_problems(field: str, path: Path, given: str) -> list[str]:
    if not path.is_file():
        return [f"{field}: no such file, got {given!r}"]
    if path.suffix != ".safetensors":
        # .ckpt / .pt / .bin LoRAs are pickles: loading one can run code, so it is never opened
        return [(f"{field}: only .safetensors LoRAs are supported ({path.suffix or 'no extension'} "
                f"files are pickles, which are never loaded), got {str(path)!r}")]
    problems = _header_problems(field, path)
    if not problems:
        try:
            lora_config(path)
        except ValueError as e:
            problems.append(Problem(field, str(e), str(path)))
    return problems


def check_inputs(config: RunConfig, model_config: str) -> None:
    """:func:`check_files`, and every checkpoint and LoRA has the loaded model's architecture."""
    check_files(config)
    problems = []
    for i, m in enumerate(config.models):
        path = config.resolve_path(m.path)
        try:
            found = infer_model_config(path)
        except ValueError as e:
            problems.append(Problem(f"models[{i}].path", str(e)))
            continue
        if found != model_config:
            problems.append(
                Problem(f"models[{i}].path", f"{path.name} is {found or 'an unknown architecture'} but the "
                                             f"loaded model is {model_config}; all checkpoints must share "
                                             "one architecture (no SD1/SDXL mix)"))
    for i, lo in enumerate(config.loras):
        path = config.resolve_path(lo.path)
        found = lora_config(path)
        if _arch(found) != _arch(model_config):
            problems.append(Problem(f"loras[{i}].path", f"{path.name} is a {found} LoRA but the loaded "
                                                        f"model is {model_config}", str(path)))
    if problems:
        raise ConfigError(problems)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """A1111's short hash: the first 10 hex digits of the file's sha256.

    Remembered per (path, size, mtime) for the life of the process: an SDXL checkpoint takes
    seconds to hash, and a WebUI starts many runs on the same files."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()[:10]
    return _HASHES[key]
