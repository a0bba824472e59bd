"""Shared pytest fixtures."""

from __future__ import annotations

import os

# No test may reach the network; huggingface_hub reads this once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

# On the small shared CPU machines, two intra-op threads competing with other processes make
# tiny-model renders ~100x slower (OpenMP spin-waits); one thread is as fast when idle.
torch.set_num_threads(1)

# --- tiny real models (sd_optim.tiny_models) and the diffusers host ------------------------------


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_sd1_paths(tiny_models_dir):
    """Three tiny SD1 checkpoints (sd1-ldm keys, fp32), seeds 0, 1, 2."""
    from sd_optim.tiny_models import tiny_model_set

    return tiny_model_set("sd1", tiny_models_dir, n=3, seed=0)


@pytest.fixture(scope="session")
def tiny_sd1_config_dir(tiny_models_dir):
    from sd_optim.tiny_models import tiny_diffusers_config

    return tiny_diffusers_config("sd1", tiny_models_dir / "sd1-diffusers-config")


@pytest.fixture(scope="session")
def tiny_sdxl_paths(tiny_models_dir):
    """Two tiny SDXL checkpoints (sdxl-sgm keys, fp32), seeds 0, 1."""
    from sd_optim.tiny_models import tiny_model_set

    return tiny_model_set("sdxl", tiny_models_dir, n=2, seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_config_dir(tiny_models_dir):
    from sd_optim.tiny_models import tiny_diffusers_config

    return tiny_diffusers_config("sdxl", tiny_models_dir / "sdxl-diffusers-config")


@pytest.fixture(scope="session")
def sd1_host(tiny_sd1_paths, tiny_sd1_config_dir):
    """A CPU DiffusersHost on the first tiny SD1 model."""
    from sd_optim.hosts.diffusers_host import DiffusersHost

    return DiffusersHost(tiny_sd1_paths[0], config_dir=tiny_sd1_config_dir, device="cpu")


@pytest.fixture(scope="session")
def sdxl_host(tiny_sdxl_paths, tiny_sdxl_config_dir):
    """A CPU DiffusersHost on the first tiny SDXL model."""
    from sd_optim.hosts.diffusers_host import DiffusersHost

    return DiffusersHost(tiny_sdxl_paths[0], config_dir=tiny_sdxl_config_dir, device="cpu")


# --- a loopback file server for scorer weights, and a scorer whose file it serves ---


@pytest.fixture
def server(monkeypatch):
    """The loopback file server (tests/file_server.py), HF_ENDPOINT pointing at it."""
    from file_server import Server

    s = Server()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("sd_optim.scoring.download._hf_cached", lambda file: None)
    yield s
    s.close()


@pytest.fixture
def tiny_scorer(monkeypatch, server):
    """A scorer registered for the test whose one file the loopback server serves."""
    from file_server import HF_FILE

    from sd_optim.scoring import base as scoring_base
    from sd_optim.scoring.base import Scorer, register_scorer

    monkeypatch.setattr(scoring_base, "_REGISTRY", dict(scoring_base._REGISTRY))

    class TinyWeights(Scorer):
        name = "tiny_weights"
        summary = "a test scorer with one weight file"
        files = (HF_FILE,)

        def score(self, images, ctx):
            return [1.0] * len(images)

    return register_scorer(TinyWeights)


# --- a real PostgreSQL server (tests/pg_server.py), for shared studies ------------------------------


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of an empty database on a throw-away PostgreSQL server (the Debian package's,
    installed by tools/ensure-postgres.sh); CI fails without one, elsewhere the tests skip."""
    from pg_server import PostgresServer, pg_bin

    bin_dir = pg_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (bash tools/ensure-postgres.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()
