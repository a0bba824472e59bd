"""Fake of ``backend/loader.py`` (Forge dfdcbab6): ``forge_loader`` (``:486-``), ``split_state_dict``
(``:449-483``) and the external-VAE part of ``replace_state_dict`` (``:181-219``).

Reproduced: the whole load runs under ``torch.inference_mode()``; UNet and VAE keys are popped
by prefix, then ``guess.process_clip_state_dict`` converts the rest and ``clip_l.`` / ``clip_g.``
are split off; CLIP ``position_ids`` are not loaded; the UNet is stored in the selected
``unet_storage_dtype`` (fp8 cast; 'nf4' / 'fp4' mark the weights as bnb ``Params4bit`` do,
``bnb_quantized``, without packing them), and ``KModel.storage_dtype`` records it.
"""

import huggingface_guess
import safetensors.torch
import torch
from backend.diffusion_engine.sd15 import StableDiffusion
from backend.diffusion_engine.sdxl import StableDiffusionXL
from backend.nn.base import place_parameters
from backend.nn.clip import IntegratedCLIP
from backend.patcher.unet import KModel
from backend.state_dict import try_filter_state_dict

renderer = None  # set by the installer (tests/fakes/render.py)


def replace_state_dict(sd, asd, guess):
    vae_key_prefix = guess.vae_key_prefix[0]
    if "decoder.conv_in.weight" in asd:
        for k in [k for k in sd if k.startswith(vae_key_prefix)]:
            del sd[k]
        for k, v in asd.items():
            sd[vae_key_prefix + k] = v
    return sd


def split_state_dict(sd, additional_state_dicts=None):
    guess = huggingface_guess.guess(sd)
    for path in additional_state_dicts or []:
        sd = replace_state_dict(sd, safetensors.torch.load_file(path), guess)
    state_dict = {
        "unet": try_filter_state_dict(sd, guess.unet_key_prefix),
        "vae": try_filter_state_dict(sd, guess.vae_key_prefix),
    }
    sd = guess.process_clip_state_dict(sd)
    for k, v in guess.clip_target.items():
        state_dict[v] = try_filter_state_dict(sd, [k + "."])
    return state_dict, guess


def _unet(unet_sd, guess, storage_dtype):
    computation = torch.float32
    if isinstance(storage_dtype, torch.dtype):
        unet_sd = {k: v.to(storage_dtype) for k, v in unet_sd.items()}
    diffusion_model = torch.nn.Module()
    place_parameters(diffusion_model, unet_sd)
    if storage_dtype in ("nf4", "fp4"):
        for name, p in diffusion_model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                p.bnb_quantized = True
    diffusion_model.storage_dtype = storage_dtype or torch.float32
    diffusion_model.computation_dtype = computation
    return KModel(diffusion_model, guess, storage_dtype or torch.float32, computation)


@torch.inference_mode()
def forge_loader(sd, additional_state_dicts=None):
    from backend.args import dynamic_args

    sd = safetensors.torch.load_file(sd)  # inference tensors: loaded under inference mode
    state_dicts, guess = split_state_dict(sd, additional_state_dicts)
    components = {"unet": _unet(state_dicts["unet"], guess, dynamic_args["forge_unet_storage_dtype"])}
    vae = torch.nn.Module()
    place_parameters(vae, {k: v for k, v in state_dicts["vae"].items() if not k.startswith("loss.")})
    components["vae"] = vae
    for name in guess.clip_target.values():
        te = {k: v for k, v in state_dicts[name].items() if not k.endswith("position_ids")}
        components[name] = IntegratedCLIP(te)
    engine_cls = StableDiffusionXL if "text_encoder_2" in components else StableDiffusion
    engine = engine_cls(estimated_config=guess, huggingface_components=components)
    engine.renderer = renderer
    return engine
