"""Fake of the built-in ``extensions-builtin/sd_forge_lora/networks.py`` (Forge dfdcbab6,
``load_networks``, ``:68-127``), importable as the top-level module ``networks``.

Reproduced: the wanted set is hashed into ``sd_model.current_lora_hash`` (same hash: return at
once); otherwise ``forge_objects.unet`` / ``.clip`` go back to the ``forge_objects_original`` ones,
each LoRA clones them and adds its patches, and the result is stored as
``forge_objects_after_applying_lora``. Nothing is baked here: baking happens when the patched
clone is loaded (``memory_management.load_models_gpu`` -> ``refresh_loras``). A fake LoRA adds
``0.05 * multiplier`` to a few UNet and CLIP-L weights.
"""

from modules import sd_models

available_networks = {"detail": "/models/Lora/detail.safetensors", "style": "/models/Lora/style.safetensors"}
loaded_networks: list = []
UNET_KEYS = ("diffusion_model.out.2.weight", "diffusion_model.input_blocks.0.0.weight")
CLIP_KEYS = ("clip_l.transformer.text_model.final_layer_norm.weight",)


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    current_sd = sd_models.model_data.get_sd_model()
    if current_sd is None:
        return
    loaded_networks.clear()
    loaded_networks.extend(n for n in names if n in available_networks)
    te_multipliers = te_multipliers or [1.0] * len(names)
    unet_multipliers = unet_multipliers or [1.0] * len(names)
    targets = [[available_networks[n], u, t, False] for n, u, t in zip(names, unet_multipliers, te_multipliers)
               if n in available_networks]
    compiled = str(targets)
    if current_sd.current_lora_hash == compiled:
        return
    current_sd.current_lora_hash = compiled
    current_sd.forge_objects.unet = current_sd.forge_objects_original.unet
    current_sd.forge_objects.clip = current_sd.forge_objects_original.clip
    for filename, strength_model, strength_clip, online_mode in targets:
        unet = current_sd.forge_objects.unet.clone()
        unet.add_patches(filename=filename, patches=dict.fromkeys(UNET_KEYS, 0.05),
                         strength_patch=strength_model, online_mode=online_mode)
        clip = current_sd.forge_objects.clip.clone()
        clip.patcher.add_patches(filename=filename, patches=dict.fromkeys(CLIP_KEYS, 0.05),
                                 strength_patch=strength_clip, online_mode=online_mode)
        current_sd.forge_objects.unet, current_sd.forge_objects.clip = unet, clip
    current_sd.forge_objects_after_applying_lora = current_sd.forge_objects.shallow_copy()
