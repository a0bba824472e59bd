"""The standalone host a run config asks for (the command line, the demo and the standalone app
build it here): a diffusers pipeline from ``host_model`` on the device ``device`` names, and
torch's CPU thread count for it."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..errors import ConfigError, Problem
from ..files.inputs import check_files
from .diffusers_host import DiffusersHost

SMALL_MODEL_BYTES = 256 * 2**20  # below this (the demo's and the tests' models) one thread is fastest
_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice: the machine's physical cores


def cpu_threads_for(model_bytes: int) -> int:
    """torch's intra-op threads for a model of ``model_bytes``: one for tiny models, whose
    tensors are too small for threads to pay for starting; torch's default for real ones."""
    return 1 if model_bytes < SMALL_MODEL_BYTES else _DEFAULT_THREADS


def choose_device(requested: str) -> str:
    """``auto`` or empty: CUDA when there is one, else the CPU; a CUDA device that is not there is refused."""
    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([Problem("device", "no CUDA device is available here", requested)])
    return requested


def make_host(config: RunConfig, device: str | None = None) -> DiffusersHost:
    check_files(config)  # a missing or unsupported file is named as such, not as a load failure
    model = config.model_by_name(config.host_model) if config.host_model else None
    if model is None:
        raise ConfigError([Problem("host_model", "recipe mode needs host_model or at least one model to "
                                                 "load")])
    path = config.resolve_path(model.path)
    config_dir = config.resolve_path(config.diffusers_config) if config.diffusers_config else None
    if config_dir is not None and not config_dir.is_dir():
        raise ConfigError([Problem("diffusers_config", "no such folder", str(config_dir))])
    try:
        torch.set_num_threads(cpu_threads_for(path.stat().st_size))
        return DiffusersHost(path, config_dir=config_dir, device=device or choose_device(config.device))
    except (ValueError, OSError) as e:
        raise ConfigError([Problem("host_model", f"{model.name} ({path}): cannot load it: {e}")]) from None
