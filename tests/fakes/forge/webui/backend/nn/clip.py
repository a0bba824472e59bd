"""Stand-in for ``backend/nn/clip.py`` (Forge dfdcbab6, ``IntegratedCLIP``, ``:4-12``) as loaded by
``backend/loader.py:62-80``: ``.transformer`` is an HF ``CLIPTextModel`` (``text_model.*``, with the
non-persistent ``position_ids`` buffer of transformers 4.46), plus ``transformer.text_projection``
(a ``ForgeOperations.Linear``: no parameter at all unless its key was loaded, ``operations.py:126-147``)
and ``logit_scale`` (4.6055 unless loaded)."""

import torch
from backend.nn.base import place_parameters


class IntegratedCLIP(torch.nn.Module):
    def __init__(self, state_dict: dict):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.text_projection = torch.nn.Module()
        place_parameters(self, {k: v for k, v in state_dict.items() if k != "logit_scale"})
        embeddings = self.transformer.text_model.embeddings
        embeddings.register_buffer("position_ids", torch.arange(77).expand((1, -1)), persistent=False)
        logit = state_dict.get("logit_scale", torch.tensor(4.6055))
        self.logit_scale = torch.nn.Parameter(logit, requires_grad=False)
