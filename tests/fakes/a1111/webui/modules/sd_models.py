"""Fake of ``modules/sd_models.py`` (A1111 v1.10.1, 82a973c0).

Reproduced: ``CheckpointInfo`` (title ``name`` until the sha256 is computed at load, then
``name [shorthash]``), the ``checkpoints_list`` / ``checkpoint_aliases`` registries and
``list_models`` (new objects), ``select_checkpoint``, ``model_data``, ``load_model`` (build,
load weights, hijack, model-loaded callbacks, empty-prompt cond), and ``reload_model_weights``:
a no-op while ``sd_model.sd_model_checkpoint == select_checkpoint().filename`` and the fp8 state
is unchanged, else undo_hijack -> ``load_state_dict(strict=False)`` from the file -> hijack ->
callbacks, on the same object, without recomputing ``cond_stage_model_empty_prompt``.
The checkpoint "folder" is the list ``checkpoint_files`` that the installer fills.
"""

import hashlib
import os
import threading

import safetensors.torch
import torch

from modules import _tiny_ldm, devices, script_callbacks, sd_hijack, shared

model_path = ""
checkpoint_files: list = []
checkpoints_list: dict = {}
checkpoint_aliases: dict = {}
renderer = None  # set by the installer: renders from the live weights


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = os.path.abspath(filename)
        self.name = os.path.basename(filename)
        self.name_for_extra = os.path.splitext(self.name)[0]
        self.model_name = self.name_for_extra
        self.hash = None
        self.sha256 = None
        self.shorthash = None
        self.title = self.name
        self.short_title = self.name_for_extra
        self.ids = [self.model_name, self.name, self.name_for_extra]
        self.metadata = {}
        self.is_safetensors = self.filename.endswith(".safetensors")

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self

    def calculate_shorthash(self):
        if self.sha256 is None:
            with open(self.filename, "rb") as f:
                self.sha256 = hashlib.sha256(f.read()).hexdigest()
        short = self.sha256[:10]
        if self.shorthash == short:
            return short
        self.shorthash = short
        self.ids += [short, self.sha256, f"{self.name} [{short}]", f"{self.name_for_extra} [{short}]"]
        checkpoints_list.pop(self.title, None)
        self.title = f"{self.name} [{short}]"
        self.short_title = f"{self.name_for_extra} [{short}]"
        self.register()
        return short


def list_models():
    """Re-lists ``checkpoint_files`` plus every ``.safetensors``/``.ckpt`` in ``model_path`` and
    ``cmd_opts.ckpt_dir`` (A1111: ``modelloader.load_models``), as new ``CheckpointInfo`` objects."""
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    found = list(checkpoint_files)
    for folder in (model_path, shared.cmd_opts.ckpt_dir):
        if folder and os.path.isdir(folder):
            found += sorted(os.path.join(folder, f) for f in os.listdir(folder)
                            if f.endswith((".safetensors", ".ckpt")))
    for f in found:
        CheckpointInfo(f).register()


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    found = sorted((i for i in checkpoints_list.values() if search_string in i.title), key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        raise FileNotFoundError("No checkpoints found")
    info = next(iter(checkpoints_list.values()))
    shared.opts.data["sd_model_checkpoint"] = info.title
    return info


def check_fp8(model):
    if model is None:
        return None
    return shared.opts.fp8_storage == "Enable" or (shared.opts.fp8_storage == "Enable for SDXL" and model.is_sdxl)


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            with self.lock:
                if self.sd_model is None:
                    load_model()
        return self.sd_model

    def set_sd_model(self, v):
        self.sd_model = v
        self.was_loaded_at_least_once = True
        if v is not None and v not in self.loaded_sd_models:
            self.loaded_sd_models.insert(0, v)


model_data = ModelData()


def read_state_dict(checkpoint_file):
    return safetensors.torch.load_file(checkpoint_file)


def load_model_weights(model, checkpoint_info, state_dict):
    """``:410-539``: load, then fp8 storage for ``Linear``/``Conv2d`` outside the VAE when
    ``check_fp8`` (the model is halved first; ``opts.cache_fp16_weight`` keeps CPU fp16 copies of
    those weights and biases as ``fp16_weight``/``fp16_bias``)."""
    for module in model.modules():
        for attr in ("fp16_weight", "fp16_bias"):
            if hasattr(module, attr):
                delattr(module, attr)
    devices.fp8 = bool(check_fp8(model))
    if devices.fp8:
        model.half()
    model.load_state_dict(state_dict, strict=False)
    if devices.fp8:
        for name, module in model.named_modules():
            if getattr(module, "kind", "") not in ("Linear", "Conv2d") or name.startswith("first_stage_model."):
                continue
            if shared.opts.cache_fp16_weight:
                module.fp16_weight = module.weight.data.clone().cpu().half()
                if module._parameters.get("bias") is not None:
                    module.fp16_bias = module.bias.data.clone().cpu().half()
            module.to(torch.float8_e4m3fn)
    model.sd_model_hash = checkpoint_info.calculate_shorthash()
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title


def get_empty_cond(sd_model):
    from modules import extra_networks, processing

    p = processing.StableDiffusionProcessingTxt2Img()
    extra_networks.activate(p, {})
    d = sd_model.get_learned_conditioning([""])
    return d["crossattn"] if isinstance(d, dict) else d


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()
    state_dict = already_loaded_state_dict or read_state_dict(checkpoint_info.filename)
    # the config is found from the keys (sd_models_config.guess_model_config_from_state_dict)
    sdxl = any(k.startswith("conditioner.embedders.1.") for k in state_dict)
    model = (_tiny_ldm.DiffusionEngine if sdxl else _tiny_ldm.LatentDiffusion)(state_dict, renderer)
    load_model_weights(model, checkpoint_info, state_dict)
    sd_hijack.model_hijack.hijack(model)
    model.eval()
    model_data.set_sd_model(model)
    script_callbacks.model_loaded_callback(model)
    with devices.autocast(), torch.no_grad():
        model.cond_stage_model_empty_prompt = get_empty_cond(model)
    return model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    sd_model = sd_model or model_data.sd_model
    if sd_model is None:
        return load_model(checkpoint_info)
    if check_fp8(sd_model) != devices.fp8:
        forced_reload = True
    if sd_model.sd_model_checkpoint == checkpoint_info.filename and not forced_reload:
        return sd_model
    sd_hijack.model_hijack.undo_hijack(sd_model)
    load_model_weights(sd_model, checkpoint_info, read_state_dict(checkpoint_info.filename))
    sd_hijack.model_hijack.hijack(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model
