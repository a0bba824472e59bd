"""Fake of ``modules/shared.py`` (Forge dfdcbab6): ``opts``, ``state``, ``cmd_opts`` and the
``sd_model`` module property over ``sd_models.model_data`` (no lazy load in Forge)."""

import sys
import types

from modules import options, shared_state

OptionInfo = options.OptionInfo

# api_auth / gradio_auth / gradio_auth_path: the API's and the UI's logins, kept from A1111's
# modules/cmd_args.py (none by default)
cmd_opts = types.SimpleNamespace(ckpt_dir=None, ckpt="", embeddings_dir="", no_prompt_history=True,
                                 api_auth=None, gradio_auth=None, gradio_auth_path=None)

_DEFAULTS = {
    "sd_model_checkpoint": None, "sd_checkpoint_dropdown_use_short": False, "sd_checkpoint_hash": "", "forge_additional_modules": [],
    "forge_unet_storage_dtype": "Automatic", "persistent_cond_cache": True,
    "CLIP_stop_at_last_layers": 1, "sdxl_crop_left": 0, "sdxl_crop_top": 0, "fp8_storage": "Disable",
    "cache_fp16_weight": False, "emphasis": "Original", "sd_lora": "None", "samples_save": True,
}
opts = options.Options({k: OptionInfo(v) for k, v in _DEFAULTS.items()})
state = shared_state.State()
# shared_options.py:173: "sd_model_checkpoint" is "(Managed by Forge)", a gr.State with no refresh;
# the checkpoint dropdown is modules_forge.main_entry's own
settings_components = None  # ui_settings.UiSettings.create_ui: {key: component} once the UI is built


class Shared(types.ModuleType):
    @property
    def sd_model(self):
        from modules import sd_models

        return sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        from modules import sd_models

        sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
