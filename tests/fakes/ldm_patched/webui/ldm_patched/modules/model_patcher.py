"""Fake of ``ldm_patched/modules/model_patcher.py`` (reForge 3b56b268 :559-587,727-753; Forge Classic
1f95d717 :530; Forge ``previous`` bfee03d8 :43-52,363-383).

Reproduced: ``clone()`` shares ``.model`` and copies the patch lists, with its own (empty)
``backup``; ``add_patches`` keeps keys the model has; ``patch_model(device_to)`` backs each patched
weight up once (``weight.to(offload_device, copy=weight_inplace_update)``: the *same* tensor when
it is already there) and puts the patched weight in place as a **new** Parameter
(``set_attr_param``; ``copy_to_param`` with ``weight_inplace_update``); ``unpatch_model(device_to)``
puts every backup back the same way and clears it. A patch is ``(strength, delta)``: weight +=
strength * delta, computed in float32 and cast to the weight's dtype.
"""

import torch
from ldm_patched.modules import utils


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None,
                 weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = current_device or offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}

    def clone(self):
        n = type(self)(self.model, self.load_device, self.offload_device, self.size, self.current_device,
                       weight_inplace_update=self.weight_inplace_update)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.object_patches = dict(self.object_patches)
        return n

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def model_state_dict(self):
        return self.model.state_dict()

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        keys = set(self.model_state_dict())
        added = []
        for k, delta in patches.items():
            if k in keys:
                self.patches.setdefault(k, []).append((strength_patch, delta))
                added.append(k)
        return added

    @torch.no_grad()
    def patch_model(self, device_to=None, patch_weights=True):
        for key, patches in self.patches.items():
            weight = utils.get_attr(self.model, key)
            if key not in self.backup:
                self.backup[key] = weight.to(device=self.offload_device, copy=self.weight_inplace_update)
            out = weight.to(torch.float32, copy=True)
            for strength, delta in patches:
                out += strength * delta.to(torch.float32)
            if self.weight_inplace_update:
                utils.copy_to_param(self.model, key, out)
            else:
                utils.set_attr_param(self.model, key, out.to(weight.dtype))
        if device_to is not None:
            self.model.to(device_to)
            self.current_device = device_to
        return self.model

    @torch.no_grad()
    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            for key, weight in self.backup.items():
                if self.weight_inplace_update:
                    utils.copy_to_param(self.model, key, weight)
                else:
                    utils.set_attr_param(self.model, key, weight)
            self.backup.clear()
            if device_to is not None:
                self.model.to(device_to)
                self.current_device = device_to
