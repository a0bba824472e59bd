"""Fake of the built-in Lora extension's ``networks.py`` in the ldm_patched family (reForge 3b56b268
``extensions-builtin/Lora/networks.py:51-104``, Forge Classic 1f95d717 :24-80), importable as the
top-level module ``networks``.

Reproduced: ``load_networks`` compares the compiled ``[[file, unet, te], ...]`` string with
``sd_model.current_lora_hash`` and returns early when equal; otherwise it resets
``forge_objects.unet/.clip`` to the original patchers, builds patched clones with
``load_lora_for_models`` and stores ``forge_objects_after_applying_lora``. Nothing is baked here:
the clones bake their patches when loaded (``ModelPatcher.patch_model``). A "LoRA" adds
``0.05 * multiplier`` to every matrix weight of the UNet and the text encoders.
"""

import torch
from ldm_patched.modules import sd as ldm_sd
from modules import sd_models

available_networks = {"detail": 1.0, "style": 2.0}
loaded_networks: list = []


def lora_state_dict(name, sd_model):
    scale = available_networks[name]
    out = {}
    for n, p in sd_model.forge_objects_original.unet.model.named_parameters():
        if p.dim() >= 2:
            out[n] = torch.full(p.shape, 0.05 * scale)
    for n, p in sd_model.forge_objects_original.clip.cond_stage_model.named_parameters():
        if p.dim() == 2 and "embedding" not in n and "text_projection" not in n:
            out[n] = torch.full(p.shape, 0.05 * scale)
    return out


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    current_sd = sd_models.model_data.get_sd_model()
    if current_sd is None:
        return
    names = [n for n in names if n in available_networks]
    te_multipliers = list(te_multipliers or [1.0] * len(names))
    unet_multipliers = list(unet_multipliers or te_multipliers)
    loaded_networks[:] = names
    compiled = [[f"{n}.safetensors", u, t] for n, u, t in zip(names, unet_multipliers, te_multipliers)]
    if current_sd.current_lora_hash == str(compiled):
        return
    current_sd.current_lora_hash = str(compiled)
    current_sd.forge_objects.unet = current_sd.forge_objects_original.unet
    current_sd.forge_objects.clip = current_sd.forge_objects_original.clip
    for (filename, strength_model, strength_clip), name in zip(compiled, names):
        current_sd.forge_objects.unet, current_sd.forge_objects.clip = ldm_sd.load_lora_for_models(
            current_sd.forge_objects.unet, current_sd.forge_objects.clip, lora_state_dict(name, current_sd),
            strength_model, strength_clip, filename=filename)
    current_sd.forge_objects_after_applying_lora = current_sd.forge_objects.shallow_copy()
