"""Fake of ``backend/patcher/lora.py`` (Forge dfdcbab6, ``LoraLoader``, ``:343-447``).

Reproduced: one loader per model (shared by every patcher clone); ``refresh`` is a no-op while
``str(list(lora_patches))`` equals ``loaded_hash`` unless ``force_refresh``; otherwise it puts
every backed-up Parameter object back with ``set_attr_raw``, clears the backup, then for each
patched key backs the weight up (the same object when already on the offload device) and sets a
**new** ``Parameter`` holding the merged weight. A patch here is a number added to the weight
(``merge_lora_to_weight`` stand-in), enough to change the picture.
"""

import torch
from backend import utils

_CPU = torch.device("cpu")


def merge_lora_to_weight(patches, weight, key=None, computation_dtype=torch.float32):
    merged = weight.to(computation_dtype)
    for strength_patch, value, strength_model, _offset, _function in patches:
        merged = merged + strength_patch * strength_model * value
    return merged.to(weight.dtype)


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.online_backup = []
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=_CPU, force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        all_patches = {}
        for (_, _, _, online_mode), patches in lora_patches.items():
            for key, current in patches.items():
                all_patches[(key, online_mode)] = all_patches.get((key, online_mode), []) + current
        for k, w in self.backup.items():
            if not isinstance(w, torch.nn.Parameter):
                w = torch.nn.Parameter(w, requires_grad=False)
            utils.set_attr_raw(self.model, k, w)
        self.backup = {}
        for (key, _online), current in all_patches.items():
            _parent, _child, weight = utils.get_attr_with_parent(self.model, key)
            assert isinstance(weight, torch.nn.Parameter)
            if key not in self.backup:
                self.backup[key] = weight.to(device=offload_device)
            merged = merge_lora_to_weight(current, weight, key)
            utils.set_attr_raw(self.model, key, torch.nn.Parameter(merged, requires_grad=False))
        self.loaded_hash = hashes
