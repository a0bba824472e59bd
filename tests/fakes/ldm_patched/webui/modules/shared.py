"""Fake of ``modules/shared.py`` + the options the ldm_patched host meets (reForge 3b56b268
``modules/shared_options.py:193-305``, Forge Classic 1f95d717 ``:165-252``).

``shared.sd_model`` is a module property over ``sd_models.model_data``; ``cmd_opts.ckpt_dir``;
``opts.use_old_clip_g_load_and_ztsnr_application`` (reForge only, default False).
"""

import sys
import types

from modules import devices, options, shared_items, shared_state

OptionInfo = options.OptionInfo
options_section = options.options_section

# api_auth / gradio_auth / gradio_auth_path: the API's and the UI's logins, kept from A1111's
# modules/cmd_args.py (none by default)
cmd_opts = types.SimpleNamespace(ckpt_dir=None, no_hashing=False, embeddings_dir=None, skip_install=False,
                                 api_auth=None, gradio_auth=None, gradio_auth_path=None)

_DEFAULTS = {
    "sd_model_checkpoint": None, "sd_checkpoint_dropdown_use_short": False, "sd_checkpoint_hash": "", "sd_checkpoints_limit": 1,
    "persistent_cond_cache": True, "sd_unet": "Automatic", "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1, "sd_lora": "None", "sdxl_crop_left": 0, "sdxl_crop_top": 0,
    "hide_samplers": [], "use_old_clip_g_load_and_ztsnr_application": False,
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
