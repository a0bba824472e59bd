"""Fake of ``ldm_patched/modules/model_management.py`` (reForge 3b56b268, Forge Classic 1f95d717, Forge
``previous`` bfee03d8), CPU only.

Reproduced: ``current_loaded_models`` (newest first) of ``LoadedModel`` (``.model`` is the patcher,
``.device`` its load device); ``load_models_gpu`` keeps an already-loaded patcher, else unloads
its clones (same ``.model``: their LoRA backups go back), then ``patch_model``s it (which bakes its
patches); ``free_memory(memory, device)`` unloads only models loaded on ``device``, and
``unload_all_models()`` is ``free_memory(1e30, get_torch_device())`` (:1392-1393 @R, :835-836 @P);
``unet_dtype()`` follows the ``--unet-in-fp8-*`` flags; ``text_encoder_device()`` is where the CLIP
patcher loads (the real one returns the CPU for some VRAM states while the torch device is the GPU;
the installer's ``te_elsewhere`` stands for that with a second CPU device id).
"""

import torch
from ldm_patched.modules.args_parser import args

current_loaded_models: list = []
TEXT_ENCODER_DEVICE = torch.device("cpu")


def get_torch_device():
    return torch.device("cpu")


def text_encoder_device():
    return TEXT_ENCODER_DEVICE


def unet_offload_device():
    return torch.device("cpu")


def unet_dtype(device=None, model_params=0):
    if args.unet_in_fp8_e4m3fn:
        return torch.float8_e4m3fn
    if args.unet_in_fp8_e5m2:
        return torch.float8_e5m2
    return torch.float32


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device

    def model_load(self):
        return self.model.patch_model(device_to=self.device)

    def model_unload(self):
        self.model.unpatch_model(self.model.offload_device)
        return True

    def __eq__(self, other):
        return self.model is other.model


def load_models_gpu(models, memory_required=0):
    for m in models:
        loaded = next((lm for lm in current_loaded_models if lm.model is m), None)
        if loaded is not None:
            current_loaded_models.remove(loaded)
            current_loaded_models.insert(0, loaded)
            continue
        for lm in list(current_loaded_models):
            if lm.model.model is m.model:  # unload_model_clones
                lm.model_unload()
                current_loaded_models.remove(lm)
        loaded = LoadedModel(m)
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def free_memory(memory_required, device, keep_loaded=()):
    for lm in list(reversed(current_loaded_models)):
        if lm.device == device and lm not in keep_loaded:
            lm.model_unload()
            current_loaded_models.remove(lm)


def unload_all_models():
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force=False):
    pass
