"""Fake of ``backend/diffusion_engine/base.py`` (Forge dfdcbab6, ``:7-67``): ``ForgeObjects`` (whose
``shallow_copy`` copies references only) and ``ForgeDiffusionEngine`` (``model_config`` = the
huggingface_guess instance, the three ``forge_objects*``, ``current_lora_hash = str([])``, and the
A1111 compatibility fields: ``first_stage_model`` / ``cond_stage_model`` are ``None``)."""


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    def __init__(self, estimated_config, huggingface_components):
        self.model_config = estimated_config
        self.is_inpaint = False
        self.forge_objects = None
        self.forge_objects_original = None
        self.forge_objects_after_applying_lora = None
        self.current_lora_hash = str([])
        self.tiling_enabled = False
        self.first_stage_model = None
        self.cond_stage_model = None
        self.use_distilled_cfg_scale = False
        self.is_sd1 = self.is_sd2 = self.is_sdxl = self.is_sd3 = False
        self.renderer = None  # fake only: set by the loader

    def get_learned_conditioning(self, prompt: list[str]):
        from backend import memory_management

        clip = self.forge_objects.clip
        memory_management.load_model_gpu(clip.patcher)
        for name, component in (("clip_l", "text_encoder"), ("clip_g", "text_encoder_2")):
            encoder = getattr(clip.cond_stage_model, name, None)
            if encoder is not None:
                self.renderer.sync_component(component, dict(encoder.transformer.named_parameters()))
        return self.renderer.encode(list(prompt))
