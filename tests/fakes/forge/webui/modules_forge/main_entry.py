"""Fake of ``modules_forge/main_entry.py`` (Forge dfdcbab6): the storage-dtype options (``:27-38``),
``refresh_models`` (``:140-164``), which the checkpoint dropdown's refresh button (``:84-93``) and
every page load (``:94-100``) call to set the checkpoint and module dropdowns' choices, and
``refresh_model_loading_parameters`` (``:220-239``), which the checkpoint / module dropdowns call
at once (not under the queue lock): the next ``process_images`` then rebuilds the model.

``models_path`` stands for ``modules.paths.models_path`` (unset: no module folders scanned)."""

import os

import torch
from backend.args import dynamic_args
from modules import processing, shared, shared_items

models_path = ""
module_list = {}  # file name -> path of every VAE / text encoder file the module dropdown offers

forge_unet_storage_dtype_options = {
    'Automatic': (None, False),
    'Automatic (fp16 LoRA)': (None, True),
    'bnb-nf4': ('nf4', False),
    'bnb-nf4 (fp16 LoRA)': ('nf4', True),
    'float8-e4m3fn': (torch.float8_e4m3fn, False),
    'float8-e4m3fn (fp16 LoRA)': (torch.float8_e4m3fn, True),
    'bnb-fp4': ('fp4', False),
    'bnb-fp4 (fp16 LoRA)': ('fp4', True),
    'float8-e5m2': (torch.float8_e5m2, False),
    'float8-e5m2 (fp16 LoRA)': (torch.float8_e5m2, True),
}


def refresh_model_loading_parameters():
    from modules.sd_models import model_data, select_checkpoint

    checkpoint_info = select_checkpoint()
    unet_storage_dtype, lora_fp16 = forge_unet_storage_dtype_options.get(
        shared.opts.forge_unet_storage_dtype, (None, False))
    dynamic_args['online_lora'] = lora_fp16
    model_data.forge_loading_parameters = {
        "checkpoint_info": checkpoint_info,
        "additional_modules": shared.opts.forge_additional_modules,
        "unet_storage_dtype": unet_storage_dtype,
    }
    processing.need_global_unload = True


def refresh_models():
    shared_items.refresh_checkpoints()
    ckpt_list = shared_items.list_checkpoint_tiles(shared.opts.sd_checkpoint_dropdown_use_short)
    module_list.clear()
    for folder in ("VAE", "text_encoder"):
        path = os.path.join(models_path, folder) if models_path else ""
        for root, _, files in os.walk(path) if path else ():
            module_list.update({f: os.path.join(root, f) for f in files
                                if f.endswith((".ckpt", ".pt", ".bin", ".safetensors", ".gguf"))})
    return ckpt_list, module_list.keys()
