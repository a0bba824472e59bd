"""Fake of ``modules/sysinfo.py`` ``set_config`` (Forge dfdcbab6, ``:222-258``): writes the options;
a changed checkpoint / additional-modules / storage option refreshes the model loading
parameters (the next ``forge_model_reload`` then rebuilds the model)."""

from modules import shared

_RELOADING = ("sd_model_checkpoint", "forge_additional_modules", "forge_unet_storage_dtype")


def set_config(req, is_api=False, run_callbacks=True, save_config=True):
    changed = False
    for k, v in req.items():
        if k in shared.opts.data_labels:
            changed |= bool(shared.opts.set(k, v, is_api=is_api, run_callbacks=run_callbacks)) and k in _RELOADING
    if changed:
        from modules_forge import main_entry

        main_entry.refresh_model_loading_parameters()
