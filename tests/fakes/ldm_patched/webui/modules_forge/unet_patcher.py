"""Fake of ``modules_forge/unet_patcher.py`` (reForge 3b56b268, Forge Classic 1f95d717, Forge
``previous`` bfee03d8): ``UnetPatcher`` is a ``ModelPatcher`` over the ``BaseModel``."""

from ldm_patched.modules.model_patcher import ModelPatcher


class UnetPatcher(ModelPatcher):
    pass
