"""Fake of ``backend/patcher/vae.py`` (Forge dfdcbab6, ``VAE``, ``:69-89``): ``first_stage_model``
and a ``patcher`` over it."""

from backend.patcher.base import ModelPatcher


class VAE:
    def __init__(self, model=None):
        self.first_stage_model = model
        self.patcher = ModelPatcher(model)
        self.latent_channels = 4
