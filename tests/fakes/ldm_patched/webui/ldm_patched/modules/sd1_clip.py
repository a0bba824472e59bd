"""Fake of ``ldm_patched/modules/sd1_clip.py`` (reForge 3b56b268 :120-152, Forge Classic 1f95d717 :112-121,
Forge ``previous`` bfee03d8 :100-109) and ``sdxl_clip.py`` (:42-46 @R).

``SDClipModel``: ``.transformer`` a transformers ``CLIPTextModel`` (HF names, q/k/v split), cast to
the text-encoder dtype with its ``text_model.embeddings`` forced to float32; ``.text_projection`` a
bare ``Parameter(eye(width))`` and ``.logit_scale`` ``Parameter(4.6055)``; frozen. ``SD1ClipModel``
holds it as ``clip_l``; ``SDXLClipModel`` as ``clip_l`` and ``clip_g``.
"""

import torch
from transformers import CLIPTextModel


class SDClipModel(torch.nn.Module):
    def __init__(self, config, dtype=None, layer="last"):
        super().__init__()
        self.transformer = CLIPTextModel(config)
        if dtype is not None:
            self.transformer.to(dtype)
        self.transformer.text_model.embeddings.to(torch.float32)
        self.layer = layer
        width = self.transformer.get_input_embeddings().weight.shape[1]
        self.text_projection = torch.nn.Parameter(torch.eye(width))
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6055))
        self.transformer.eval()
        for p in self.parameters():
            p.requires_grad = False


class SD1ClipModel(torch.nn.Module):
    def __init__(self, config_l, dtype=None):
        super().__init__()
        self.clip_name = "clip_l"
        self.clip_l = SDClipModel(config_l, dtype)


class SDXLClipModel(torch.nn.Module):
    def __init__(self, config_l, config_g, dtype=None):
        super().__init__()
        self.clip_l = SDClipModel(config_l, dtype, layer="hidden")
        self.clip_g = SDClipModel(config_g, dtype, layer="hidden")
