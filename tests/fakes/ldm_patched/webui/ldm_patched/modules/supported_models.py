"""Fake of ``ldm_patched/modules/supported_models.py``: ``SD15`` and ``SDXL`` configs and their
``process_clip_state_dict``, in the variant of the installed profile (``modules_forge.forge_version``):

- reForge (3b56b268, :47-62,228-244): pops the text-encoder keys and returns a **new** dict of
  ``clip_l.`` / ``clip_g.`` keys; CLIP-G goes through ``clip_text_transformers_convert`` (q/k/v
  views, ``text_projection`` transposed into ``clip_g.transformer.text_projection.weight``), then,
  unless ``opts.use_old_clip_g_load_and_ztsnr_application``, is transposed back into
  ``clip_g.text_projection``;
- Forge Classic (1f95d717, :205-225) / Forge ``previous`` (bfee03d8, :33-47,181-192): renames **in
  place** (``filter_keys=False``) to ``cond_stage_model.clip_l.`` / ``cond_stage_model.clip_g.`` keys
  and returns the same dict, UNet/VAE keys included; ``text_projection`` is moved untransposed.

SD1 first inserts a missing ``text_model.`` and rounds float32 ``position_ids``, in place.
"""

import torch
from ldm_patched.modules import utils

_POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def _reforge():
    from modules_forge import forge_version

    return forge_version.version.startswith("1.0.0v2")


class SD15:
    scaled_fp8 = None

    def process_clip_state_dict(self, state_dict):
        for x in list(state_dict):
            if x.startswith("cond_stage_model.transformer.") and \
                    not x.startswith("cond_stage_model.transformer.text_model."):
                y = x.replace("cond_stage_model.transformer.", "cond_stage_model.transformer.text_model.")
                state_dict[y] = state_dict.pop(x)
        if _POS in state_dict and state_dict[_POS].dtype == torch.float32:
            state_dict[_POS] = state_dict[_POS].round()
        if _reforge():
            return utils.state_dict_prefix_replace(state_dict, {"cond_stage_model.": "clip_l."}, filter_keys=True)
        return utils.state_dict_prefix_replace(state_dict, {"cond_stage_model.": "cond_stage_model.clip_l."})


class SDXL:
    scaled_fp8 = None

    def process_clip_state_dict(self, state_dict):
        if _reforge():
            from modules.shared import opts

            sd = utils.state_dict_prefix_replace(
                state_dict, {"conditioner.embedders.0.transformer.text_model": "clip_l.transformer.text_model",
                             "conditioner.embedders.1.model.": "clip_g."}, filter_keys=True)
            sd = utils.clip_text_transformers_convert(sd, "clip_g.", "clip_g.transformer.")
            if not getattr(opts, "use_old_clip_g_load_and_ztsnr_application", False) \
                    and "clip_g.text_projection" not in sd and "clip_g.transformer.text_projection.weight" in sd:
                sd["clip_g.text_projection"] = sd.pop("clip_g.transformer.text_projection.weight").transpose(0, 1)
            return sd
        state_dict = utils.transformers_convert(state_dict, "conditioner.embedders.1.model.",
                                                "cond_stage_model.clip_g.transformer.text_model.", 32)
        state_dict = utils.state_dict_prefix_replace(
            state_dict, {"conditioner.embedders.0.transformer.text_model": "cond_stage_model.clip_l.transformer.text_model"})
        return utils.state_dict_key_replace(state_dict, {
            "conditioner.embedders.1.model.text_projection": "cond_stage_model.clip_g.text_projection",
            "conditioner.embedders.1.model.text_projection.weight": "cond_stage_model.clip_g.text_projection",
            "conditioner.embedders.1.model.logit_scale": "cond_stage_model.clip_g.logit_scale"})
