"""Checks on the input checkpoints before a run: present, and of the loaded model's architecture."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from sd_mecha.extensions import model_configs

from .config import RunConfig
from .errors import ConfigError


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a ``.safetensors`` header (ValueError when the file is not one)."""
    with open(path, "rb") as f:
        head = f.read(8)
        total = os.fstat(f.fileno()).st_size
        if len(head) < 8:
            raise ValueError(f"{Path(path).name} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size > total - 8:
            raise ValueError(f"{Path(path).name} is not a safetensors file (bad header size)")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{Path(path).name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{Path(path).name} is not a safetensors file (unreadable header)")  # noqa: TRY004
    return [k for k in header if k != "__metadata__"]


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


def check_files(config: RunConfig) -> None:
    """Every input file exists and is a format we load; before any model is loaded."""
    problems = []
    for i, m in enumerate(config.models):
        path = config.resolve_path(m.path)
        if not path.is_file():
            problems.append(f"models[{i}].path: no such file, got {str(path)!r}")
        elif path.suffix != ".safetensors":
            problems.append(f"models[{i}].path: only .safetensors checkpoints are supported, got {str(path)!r}")
    for i, lo in enumerate(config.loras):
        if not config.resolve_path(lo.path).is_file():
            problems.append(f"loras[{i}].path: no such file, got {lo.path!r}")
    if config.mode == "recipe" and not config.resolve_path(config.recipe.path).is_file():
        problems.append(f"recipe.path: no such file, got {config.recipe.path!r}")
    if problems:
        raise ConfigError(problems)


def check_inputs(config: RunConfig, model_config: str) -> None:
    """:func:`check_files`, and every checkpoint has the loaded model's architecture."""
    check_files(config)
    problems = []
    for i, m in enumerate(config.models):
        path = config.resolve_path(m.path)
        try:
            found = infer_model_config(path)
        except ValueError as e:
            problems.append(f"models[{i}].path: {e}")
            continue
        if found != model_config:
            problems.append(
                f"models[{i}].path: {path.name} is {found or 'an unknown architecture'} but the loaded "
                f"model is {model_config}; all checkpoints must share one architecture (no SD1/SDXL mix)")
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
