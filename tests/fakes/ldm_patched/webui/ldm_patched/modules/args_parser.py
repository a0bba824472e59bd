"""Fake of ``ldm_patched/modules/args_parser.py`` (reForge 3b56b268 / Forge Classic 1f95d717 / Forge
``previous`` bfee03d8): only the UNet storage flags (``--unet-in-fp8-e4m3fn``, ``--unet-in-fp8-e5m2``)."""

import types

args = types.SimpleNamespace(unet_in_fp8_e4m3fn=False, unet_in_fp8_e5m2=False)
