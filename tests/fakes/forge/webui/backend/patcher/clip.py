"""Fake of ``backend/patcher/clip.py`` (Forge dfdcbab6, ``CLIP``, ``:10-20``): ``cond_stage_model``
(a ``JointTextEncoder``) and a ``patcher`` over it; ``clone`` clones the patcher only."""

from backend.patcher.base import ModelPatcher


class CLIP:
    def __init__(self, model_dict=None, tokenizer_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = model_dict
        self.tokenizer = tokenizer_dict or {}
        self.patcher = ModelPatcher(self.cond_stage_model)

    def clone(self):
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        return n
