"""Fake of ``backend/patcher/base.py`` (Forge dfdcbab6, ``ModelPatcher``, ``:55-127``): the LoRA
loader lives on the model (``model.lora_loader``, created once, shared by clones); ``clone``
copies the patch dict, ``add_patches`` records ``[strength_patch, value, strength_model, offset,
function]`` per existing parameter key, ``refresh_loras`` asks the loader to bake them."""

import copy

import torch
from backend.patcher.lora import LoraLoader

_CPU = torch.device("cpu")


class ModelPatcher:
    def __init__(self, model, load_device=_CPU, offload_device=_CPU,
                 size=0, current_device=None):
        self.model = model
        self.size = size
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader
        self.current_device = offload_device if current_device is None else current_device

    def clone(self):
        n = type(self).__new__(type(self))
        ModelPatcher.__init__(n, self.model, self.load_device, self.offload_device, self.size,
                              self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        model_keys = {k for k, _ in self.model.named_parameters()}
        this = {k: [[strength_patch, v, strength_model, None, None]] for k, v in patches.items() if k in model_keys}
        self.lora_patches[(filename, strength_patch, strength_model, online_mode)] = this
        return set(this)

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)
