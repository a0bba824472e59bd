"""Fake of ``backend/diffusion_engine/sdxl.py`` (Forge dfdcbab6, ``StableDiffusionXL``, ``:19-79``)."""

from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.nn.base import JointTextEncoder
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE


class StableDiffusionXL(ForgeDiffusionEngine):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(model_dict=JointTextEncoder({"clip_l": huggingface_components["text_encoder"],
                                                 "clip_g": huggingface_components["text_encoder_2"]}))
        vae = VAE(model=huggingface_components["vae"])
        unet = UnetPatcher(huggingface_components["unet"])
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sdxl = True
