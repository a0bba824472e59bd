"""Fake of ``backend/memory_management.py`` (Forge dfdcbab6, ``:443-693``, ``:1194-1209``).

Reproduced: ``LoadedModel`` equality by patcher object (an already-loaded patcher is only moved
to the front, no LoRA refresh); a new patcher first unloads its clones; ``model_load`` (optionally
"CPU swap": every ``weight`` is re-wrapped in a **new** Parameter, a copy as pinned memory is)
ends with ``refresh_loras()``; ``unload_all_models`` unloads without touching LoRA backups.
``cpu_swap`` is the test lever for the low-VRAM path.
"""

import torch
from backend import utils

cpu = torch.device("cpu")
current_loaded_models = []
cpu_swap = False
signal_empty_cache = False


def get_torch_device():
    return cpu


def soft_empty_cache(force=False):
    pass


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device

    def model_load(self):
        if cpu_swap:
            with torch.inference_mode():
                for m in self.model.model.modules():
                    w = m._parameters.get("weight")
                    if w is not None:
                        m.weight = utils.tensor2parameter(w.detach().clone())
        self.model.refresh_loras()

    def model_unload(self, avoid_model_moving=False):
        pass  # moves to offload_device and restores object patches only: LoRA stays baked

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    for i in reversed(range(len(current_loaded_models))):
        if model.is_clone(current_loaded_models[i].model):
            current_loaded_models.pop(i).model_unload(avoid_model_moving=True)


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    for x in models:
        loaded = LoadedModel(x)
        if loaded in current_loaded_models:
            current_loaded_models.insert(0, current_loaded_models.pop(current_loaded_models.index(loaded)))
            continue
        unload_model_clones(x)
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    while current_loaded_models:
        current_loaded_models.pop().model_unload()
