"""Fake of ``modules/shared.py`` (A1111 v1.10.1, 82a973c0).

``shared.sd_model`` is a module property over ``sd_models.model_data`` (the first read loads a
model when none was ever loaded), as A1111 does by swapping the module's class.
"""

import sys
import types

from modules import devices, options, shared_items, shared_state

OptionInfo = options.OptionInfo
options_section = options.options_section

# api_auth "user:pw,user2:pw2" protects the API routes (modules/api/api.py); gradio_auth and
# gradio_auth_path the UI's login (webui.py get_gradio_auth_creds); none by default
cmd_opts = types.SimpleNamespace(lowvram=False, medvram=False, medvram_sdxl=False, no_half=False,
                                 no_half_vae=False, skip_install=False, no_hashing=False,
                                 ckpt_dir=None, api_auth=None, gradio_auth=None, gradio_auth_path=None)
# modules/paths_internal.py, re-exported by shared: <data_path>/models and outputs in <data_path>/outputs;
# installed() points them at a temporary WebUI folder
data_path = ""
models_path = ""

_DEFAULTS = {
    "sd_model_checkpoint": None, "sd_checkpoint_dropdown_use_short": False, "sd_checkpoint_hash": "", "sd_checkpoints_limit": 1,
    "fp8_storage": "Disable", "cache_fp16_weight": False, "persistent_cond_cache": True,
    "pad_cond_uncond": False, "sd_unet": "Automatic", "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1, "lora_functional": False, "sd_lora": "None",
    "samples_save": True, "grid_save": True, "return_grid": True, "sdxl_crop_left": 0,
    "sdxl_crop_top": 0, "emphasis": "Original", "hide_samplers": [],
    "interrupt_after_current": True,
}
opts = options.Options({k: OptionInfo(v) for k, v in _DEFAULTS.items()})
state = shared_state.State()
# shared_options.py: the checkpoint setting's dropdown lists the checkpoint tiles and its refresh
# button calls shared_items.refresh_checkpoints (the fake leaves its component, a gr.Dropdown, unset
# so that no gradio is imported)
opts.data_labels["sd_model_checkpoint"].component_args = lambda: {
    "choices": shared_items.list_checkpoint_tiles(opts.sd_checkpoint_dropdown_use_short)}
opts.data_labels["sd_model_checkpoint"].refresh = shared_items.refresh_checkpoints
settings_components = None  # ui_settings.UiSettings.create_ui: {key: component} once the UI is built
device = devices.device
loaded_hypernetworks: list = []


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
