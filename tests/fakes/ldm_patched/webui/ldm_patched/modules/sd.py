"""Fake of ``ldm_patched/modules/sd.py`` (reForge 3b56b268, Forge Classic 1f95d717, Forge ``previous``
bfee03d8): the ``CLIP`` and ``VAE`` wrappers, ``load_checkpoint_guess_config`` and
``load_lora_for_models``.

Reproduced: ``CLIP.clone()`` shares ``cond_stage_model`` with a cloned patcher; ``CLIP.load_model()``
loads (and so patches) its patcher; the VAE's ``first_stage_model`` has LDM names (checkpoint key
minus ``first_stage_model.``) and a patcher; loading runs under ``no_grad`` (normal tensors): the
UNet in ``model_management.unet_dtype()``, text encoders through the config's
``process_clip_state_dict`` (reForge: ``clip.load_sd`` of ``clip_*`` keys; Classic/previous:
``load_state_dict`` of a holder module with ``cond_stage_model``), ``strict=False``;
``load_lora_for_models`` clones both patchers and adds the LoRA's patches to the clones.
"""

import torch
from ldm_patched.modules import model_base, model_management, model_patcher, sd1_clip, supported_models
from ldm_patched.modules.supported_models import _reforge

_CPU = torch.device("cpu")


class CLIP:
    def __init__(self, cond_stage_model=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = cond_stage_model
        self.tokenizer = None
        self.patcher = model_patcher.ModelPatcher(cond_stage_model, load_device=model_management.text_encoder_device(),
                                                  offload_device=_CPU)

    def clone(self):
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        return self.patcher.add_patches(patches, strength_patch, strength_model)

    def load_model(self):
        model_management.load_model_gpu(self.patcher)
        return self.patcher

    def load_sd(self, sd):
        return self.cond_stage_model.load_state_dict(sd, strict=False)


class VAE:
    def __init__(self, sd):
        self.first_stage_model = model_base.module_tree(sd)
        self.first_stage_model.eval()
        self.patcher = model_patcher.ModelPatcher(self.first_stage_model, load_device=_CPU, offload_device=_CPU)


@torch.no_grad()
def load_checkpoint_guess_config(sd, clip_configs):
    from modules_forge.forge_loader import ForgeObjects
    from modules_forge.unet_patcher import UnetPatcher

    sd = dict(sd)
    sdxl = "conditioner.embedders.1.model.ln_final.weight" in sd
    model_config = supported_models.SDXL() if sdxl else supported_models.SD15()
    unet_sd = {k[len("model.diffusion_model."):]: sd.pop(k) for k in list(sd) if k.startswith("model.diffusion_model.")}
    vae_sd = {k[len("first_stage_model."):]: sd.pop(k) for k in list(sd) if k.startswith("first_stage_model.")}
    unet = UnetPatcher(model_base.BaseModel(model_config, unet_sd, model_management.unet_dtype()),
                       load_device=_CPU, offload_device=_CPU)
    vae = VAE(vae_sd)
    te = sd1_clip.SDXLClipModel(*clip_configs) if sdxl else sd1_clip.SD1ClipModel(clip_configs[0])
    clip = CLIP(te)
    clip_sd = model_config.process_clip_state_dict(sd)
    if _reforge():
        clip.load_sd(clip_sd)
    else:
        holder = torch.nn.Module()
        holder.cond_stage_model = te
        holder.load_state_dict(clip_sd, strict=False)
    return ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)


def load_lora_for_models(model, clip, lora, strength_model, strength_clip, filename="default"):
    new_model = model.clone()
    new_model.add_patches(lora, strength_model)
    new_clip = clip.clone()
    new_clip.add_patches(lora, strength_clip)
    return new_model, new_clip
