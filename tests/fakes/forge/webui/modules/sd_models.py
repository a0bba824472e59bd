"""Fake of ``modules/sd_models.py`` (Forge dfdcbab6).

Reproduced: ``CheckpointInfo`` (``:62-140``: ``hash`` = the legacy file hash, ``__repr__`` gives
``{'filename': ..., 'hash': ...}``, title gains ``[shorthash]`` once computed),
``checkpoint_tiles`` (plain names, ``:161``), ``list_models`` (new objects), ``select_checkpoint``,
``SdModelData`` starting with a ``FakeInitialModel`` (``:385-405``), the A1111 stubs
(``load_model``/``reload_model_weights``/``get_empty_cond`` do nothing, ``:411-449``), and
``forge_model_reload`` (``:472-526``, under inference mode): a no-op while
``forge_hash == str(forge_loading_parameters)``, else unload everything, build a **new** engine
object, bookkeeping, ``model_loaded`` callbacks, then store the hash.
"""

import hashlib
import os

import torch
from backend import memory_management
from backend.args import dynamic_args
from backend.loader import forge_loader

from modules import script_callbacks, shared

model_path = ""
checkpoint_files: list = []  # the installer's "models/Stable-diffusion" listing
checkpoints_list: dict = {}
checkpoint_aliases: dict = {}


def model_hash(filename):
    with open(filename, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        self.is_safetensors = filename.lower().endswith(".safetensors")
        name = os.path.basename(filename)
        self.metadata = {}
        self.name = name
        self.name_for_extra = os.path.splitext(name)[0]
        self.model_name = self.name_for_extra
        self.hash = model_hash(filename)
        self.sha256 = None
        self.shorthash = None
        self.title = name
        self.short_title = self.name_for_extra
        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f"{name} [{self.hash}]"]

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self

    def calculate_shorthash(self):
        with open(self.filename, "rb") as f:
            self.sha256 = hashlib.sha256(f.read()).hexdigest()
        shorthash = self.sha256[0:10]
        if self.shorthash == shorthash:
            return shorthash
        self.shorthash = shorthash
        self.ids += [shorthash, self.sha256, f"{self.name} [{shorthash}]", f"{self.name_for_extra} [{shorthash}]"]
        checkpoints_list.pop(self.title, None)
        self.title = f"{self.name} [{shorthash}]"
        self.short_title = f"{self.name_for_extra} [{shorthash}]"
        self.register()
        return shorthash

    def __repr__(self):
        return str({"filename": self.filename, "hash": self.hash})

    __str__ = __repr__


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.name for x in checkpoints_list.values()]


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    found = list(checkpoint_files)
    for folder in (model_path, shared.cmd_opts.ckpt_dir):
        if folder and os.path.isdir(folder):
            found += sorted(os.path.join(folder, f) for f in os.listdir(folder)
                            if f.endswith((".safetensors", ".ckpt", ".gguf")))
    for f in found:
        CheckpointInfo(f).register()


def get_closet_checkpoint_match(search_string):
    return checkpoint_aliases.get(search_string)


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        return None
    info = next(iter(checkpoints_list.values()))
    shared.opts.data["sd_model_checkpoint"] = info.title
    return info


class FakeInitialModel:
    def __init__(self):
        self.cond_stage_model = None
        self.chunk_length = 75


class SdModelData:
    def __init__(self):
        self.sd_model = FakeInitialModel()
        self.forge_loading_parameters = {}
        self.forge_hash = ''

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v):
        self.sd_model = v


model_data = SdModelData()


def load_model(*args, **kwargs):
    pass


def reload_model_weights(*args, **kwargs):
    pass


def get_empty_cond(sd_model):
    pass


def unload_model_weights(sd_model=None, info=None):
    memory_management.unload_all_models()


@torch.inference_mode()
def forge_model_reload():
    current_hash = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current_hash:
        return model_data.sd_model, False
    if model_data.sd_model:
        model_data.sd_model = None
        memory_management.unload_all_models()
        memory_management.soft_empty_cache()
    checkpoint_info = model_data.forge_loading_parameters['checkpoint_info']
    if checkpoint_info is None:
        raise ValueError('You do not have any model! Please download at least one model in [models/Stable-diffusion].')
    dynamic_args['forge_unet_storage_dtype'] = model_data.forge_loading_parameters.get('unet_storage_dtype', None)
    sd_model = forge_loader(checkpoint_info.filename,
                            additional_state_dicts=model_data.forge_loading_parameters.get('additional_modules', []))
    sd_model.extra_generation_params = {}
    sd_model.comments = []
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.filename = checkpoint_info.filename
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    model_data.set_sd_model(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    model_data.forge_hash = current_hash
    return sd_model, True
