"""Fake of ``modules_forge/forge_loader.py`` (reForge 3b56b268 :388-560, Forge Classic 1f95d717 :147-301,
Forge ``previous`` bfee03d8 :160-168) with the ``modules_forge/forge_clip.py`` wrappers.

``load_model_for_a1111`` builds the ComfyUI-style ``forge_objects`` (under ``no_grad``), then the A1111
shell (``LatentDiffusion`` for SD1, ``DiffusionEngine`` for SDXL, normally from the yaml) whose
``model.diffusion_model`` **is** ``forge_objects.unet.model.diffusion_model`` and
``first_stage_model`` **is** ``forge_objects.vae.first_stage_model``. Its text-encoder wrappers
(``cond_stage_model`` for SD1, ``conditioner.embedders`` for SDXL) hold the same HF ``transformer``
modules, whose ``token_embedding`` is wrapped in A1111's ``EmbeddingsWithFixes`` (so the live name
gains ``wrapped.``); the CLIP-G wrapper also holds ``clip_g.text_projection``. Bookkeeping:
``sd_model_hash``, ``sd_model_checkpoint``, ``sd_checkpoint_info``, flags, ``current_lora_hash = str([])``.

The shell's ``get_learned_conditioning`` loads the current CLIP patcher (baking its LoRA patches)
and encodes with the live text encoders; ``decode_first_stage`` runs under inference mode.
"""

import torch
from modules import sd_hijack

quantize = None  # installer lever: "gguf" / "nf4" mark the UNet weights; "scaled_fp8" the config


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class FrozenCLIPEmbedder(torch.nn.Module):
    """``ldm``/``sgm`` ``FrozenCLIPEmbedder`` (``.transformer``)."""


class FrozenOpenCLIPEmbedder2(torch.nn.Module):
    """``sgm`` ``FrozenOpenCLIPEmbedder2`` (``.transformer``, ``.text_projection``)."""


class CLIPWrapper(torch.nn.Module):
    """``forge_clip.CLIP_SD_15_L`` / ``CLIP_SD_XL_L`` / ``CLIP_SD_XL_G``: the embedder at ``.wrapped``."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped


def _hf_state(clip):
    return {n[len("transformer."):].replace(".wrapped", ""): p for n, p in clip.named_parameters()
            if n.startswith("transformer.")}


class _Shell(torch.nn.Module):
    is_sdxl = False

    def __init__(self, renderer):
        super().__init__()
        self.model = torch.nn.Module()
        self.__dict__["renderer"] = renderer

    def get_learned_conditioning(self, prompts):
        clip = self.forge_objects.clip
        clip.load_model()
        te = clip.cond_stage_model
        self.renderer.sync_component("text_encoder", _hf_state(te.clip_l))
        if self.is_sdxl:
            self.renderer.sync_component("text_encoder_2", {
                **_hf_state(te.clip_g), "text_projection.weight": te.clip_g.text_projection.t()})
        return self.renderer.encode(list(prompts))

    @torch.inference_mode()
    def decode_first_stage(self, x=None):
        from ldm_patched.modules import model_management

        model_management.load_model_gpu(self.forge_objects.vae.patcher)
        vae = self.forge_objects.vae.first_stage_model
        self.renderer.sync({"first_stage_model." + n: p for n, p in vae.named_parameters()}, ("first_stage_model.",))


class LatentDiffusion(_Shell):
    def __init__(self, renderer):
        super().__init__(renderer)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float())


class DiffusionEngine(_Shell):
    is_sdxl = True

    def __init__(self, renderer):
        super().__init__(renderer)
        self.conditioner = torch.nn.Module()
        self.conditioner.embedders = torch.nn.ModuleList()


def _wrap_token_embedding(transformer, key):
    emb = transformer.text_model.embeddings
    emb.token_embedding = sd_hijack.EmbeddingsWithFixes(emb.token_embedding, sd_hijack.model_hijack,
                                                        textual_inversion_key=key)


def _mark_quantized(forge_objects):
    unet = forge_objects.unet.model
    if quantize == "scaled_fp8":
        unet.model_config.scaled_fp8 = torch.float8_e4m3fn
    elif quantize in ("gguf", "nf4"):
        for p in unet.diffusion_model.parameters():
            if p.dim() >= 2:
                if quantize == "gguf":
                    p.gguf_cls = "Q8_0"
                else:
                    p.bnb_quantized = True


@torch.no_grad()
def load_model_for_a1111(timer=None, checkpoint_info=None, state_dict=None):
    from ldm_patched.modules import sd
    from modules import sd_models

    forge_objects = sd.load_checkpoint_guess_config(state_dict, sd_models.clip_configs)
    _mark_quantized(forge_objects)
    te = forge_objects.clip.cond_stage_model
    sdxl = hasattr(te, "clip_g")
    sd_model = (DiffusionEngine if sdxl else LatentDiffusion)(sd_models.renderer)
    sd_model.first_stage_model = forge_objects.vae.first_stage_model
    sd_model.model.diffusion_model = forge_objects.unet.model.diffusion_model
    sd_model.forge_objects = forge_objects
    sd_model.forge_objects_original = forge_objects.shallow_copy()
    sd_model.forge_objects_after_applying_lora = forge_objects.shallow_copy()
    if sdxl:
        clip_l, clip_g = FrozenCLIPEmbedder(), FrozenOpenCLIPEmbedder2()
        clip_l.transformer = te.clip_l.transformer
        _wrap_token_embedding(clip_l.transformer, "clip_l")
        clip_g.transformer = te.clip_g.transformer
        clip_g.text_projection = te.clip_g.text_projection
        _wrap_token_embedding(clip_g.transformer, "clip_g")
        sd_model.conditioner.embedders.append(CLIPWrapper(clip_l))
        sd_model.conditioner.embedders.append(CLIPWrapper(clip_g))
        sd_model.cond_stage_model = sd_model.conditioner
    else:
        embedder = FrozenCLIPEmbedder()
        embedder.transformer = te.clip_l.transformer
        _wrap_token_embedding(embedder.transformer, "clip_l")
        sd_model.cond_stage_model = CLIPWrapper(embedder)
    sd_model.is_sdxl = sdxl
    sd_model.is_sdxl_inpaint = False
    sd_model.is_sd2 = False
    sd_model.is_sd3 = False
    sd_model.is_ssd = False
    sd_model.is_sd1 = not sdxl
    sd_model.latent_channels = 4
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    sd_model.sd_model_checkpoint = checkpoint_info.filename
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.cond_stage_model_empty_prompt = None
    sd_model.current_lora_hash = str([])
    sd_model.eval()
    return sd_model
