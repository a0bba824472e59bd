"""Fake of ``backend/patcher/unet.py`` (Forge dfdcbab6, ``UnetPatcher``, ``:9-17``) and the
``KModel`` it wraps (``backend/modules/k_model.py:7-23``): ``.model.diffusion_model`` plus
``storage_dtype`` / ``computation_dtype`` / ``config``."""

import torch
from backend.patcher.base import ModelPatcher


class KModel(torch.nn.Module):
    def __init__(self, diffusion_model, config, storage_dtype, computation_dtype):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.config = config
        self.storage_dtype = storage_dtype
        self.computation_dtype = computation_dtype


class UnetPatcher(ModelPatcher):
    pass
