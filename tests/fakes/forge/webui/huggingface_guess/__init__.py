"""Fake of lllyasviel/huggingface_guess (commit 84826248, cloned by Forge dfdcbab6 into
``repositories/huggingface_guess``): ``guess(state_dict)`` for SD1 / SDXL only."""

from huggingface_guess import model_list


def guess(state_dict):
    if "conditioner.embedders.1.model.ln_final.weight" in state_dict:
        return model_list.SDXL()
    if "cond_stage_model.transformer.text_model.final_layer_norm.weight" in state_dict \
            or "cond_stage_model.transformer.final_layer_norm.weight" in state_dict:
        return model_list.SD15()
    raise ValueError("fake huggingface_guess: only SD1 and SDXL checkpoints are known")
