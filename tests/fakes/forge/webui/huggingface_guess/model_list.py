"""Fake of ``huggingface_guess/model_list.py`` (84826248): ``SD15`` (``:118-142``) and ``SDXL``
(``:292-321``) with their key prefixes and ``process_clip_state_dict`` (input keys popped, a new
dict of ``clip_l.`` / ``clip_g.`` keys returned; SD1 renames old-style ``transformer.X`` to
``transformer.text_model.X`` in the input first and rounds fp32 ``position_ids``)."""

import torch

from huggingface_guess import utils


class SD15:
    unet_key_prefix = ("model.diffusion_model.",)
    vae_key_prefix = ("first_stage_model.",)
    text_encoder_key_prefix = ("cond_stage_model.",)
    clip_target = {"clip_l": "text_encoder"}  # noqa: RUF012 - as in huggingface_guess
    huggingface_repo = "runwayml/stable-diffusion-v1-5"
    ztsnr = False

    def process_clip_state_dict(self, state_dict):
        for x in list(state_dict):
            if x.startswith("cond_stage_model.transformer.") \
                    and not x.startswith("cond_stage_model.transformer.text_model."):
                state_dict[x.replace("cond_stage_model.transformer.", "cond_stage_model.transformer.text_model.")] \
                    = state_dict.pop(x)
        ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
        if ids in state_dict and state_dict[ids].dtype == torch.float32:
            state_dict[ids] = state_dict[ids].round()
        return utils.state_dict_prefix_replace(state_dict, {"cond_stage_model.": "clip_l."}, filter_keys=True)


class SDXL:
    unet_key_prefix = ("model.diffusion_model.",)
    vae_key_prefix = ("first_stage_model.",)
    text_encoder_key_prefix = ("conditioner.embedders.",)
    clip_target = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}  # noqa: RUF012
    huggingface_repo = "stabilityai/stable-diffusion-xl-base-1.0"
    ztsnr = False

    def process_clip_state_dict(self, state_dict):
        replace_prefix = {"conditioner.embedders.0.transformer.text_model": "clip_l.transformer.text_model",
                          "conditioner.embedders.1.model.": "clip_g."}
        state_dict = utils.state_dict_prefix_replace(state_dict, replace_prefix, filter_keys=True)
        return utils.clip_text_transformers_convert(state_dict, "clip_g.", "clip_g.transformer.")
