"""Fake of ``backend/args.py`` (Forge dfdcbab6): ``dynamic_args`` set by ``forge_model_reload``."""

dynamic_args = {"forge_unet_storage_dtype": None, "online_lora": False}
