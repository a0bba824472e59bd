"""Fake of ``modules/sd_models.py`` for the ldm_patched family.

Reproduced: ``CheckpointInfo`` (title ``name`` until the sha256 is computed at load, then
``name [shorthash]``), ``checkpoints_list`` / ``checkpoint_aliases`` / ``list_models`` (new objects),
``select_checkpoint``, ``model_data``; ``load_model`` building a **new** model object through
``forge_loader.load_model_for_a1111`` (model-loaded callbacks, then the empty-prompt cond from
``get_empty_cond``, which activates extra networks first), and its reuse rule:
- reForge 3b56b268 (:1089-1146,1262-1263): a no-op when ``select_checkpoint().filename`` matches an
  entry of ``model_data.loaded_sd_models`` (up to ``opts.sd_checkpoints_limit``), which becomes
  current; ``reload_model_weights(forced_reload=True)`` builds the model again;
- Forge Classic 1f95d717 (:533-600) / Forge ``previous`` bfee03d8: a no-op when the current model's
  ``filename`` matches, else the old one is dropped (``unload_all_models``) for a new one;
  ``forced_reload`` is ignored.
The checkpoint "folder" is ``checkpoint_files`` plus ``model_path`` / ``cmd_opts.ckpt_dir``.
"""

import hashlib
import os

import safetensors.torch
import torch
from modules_forge import forge_loader, forge_version

from modules import extra_networks, script_callbacks, shared

model_path = ""
checkpoint_files: list = []
checkpoints_list: dict = {}
checkpoint_aliases: dict = {}
renderer = None  # set by the installer: renders from the live weights
clip_configs = ()  # set by the installer: the CLIPTextConfig of clip_l (and clip_g)


def _reforge():
    return forge_version.version.startswith("1.0.0v2")


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


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        raise FileNotFoundError("No checkpoints found")
    info = next(iter(checkpoints_list.values()))
    shared.opts.data["sd_model_checkpoint"] = info.title
    return info


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            load_model()
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v is not None:
            self.was_loaded_at_least_once = True
            shared.opts.data["sd_model_checkpoint"] = v.sd_checkpoint_info.title


model_data = SdModelData()


def get_empty_cond(sd_model):
    from modules import processing

    p = processing.StableDiffusionProcessingTxt2Img()
    extra_networks.activate(p, {})
    d = sd_model.get_learned_conditioning([""])
    return d["crossattn"] if isinstance(d, dict) else d


def _reuse(checkpoint_info, forced_reload):
    from ldm_patched.modules import model_management

    if _reforge():
        for m in list(model_data.loaded_sd_models):
            if m.filename == checkpoint_info.filename:
                model_data.loaded_sd_models.remove(m)
                if not forced_reload:
                    model_data.loaded_sd_models.insert(0, m)
                    model_data.set_sd_model(m, already_loaded=True)
                    return m
        while len(model_data.loaded_sd_models) >= shared.opts.sd_checkpoints_limit:
            model_data.loaded_sd_models.pop(-1)
            model_management.unload_all_models()
        return None
    if model_data.sd_model is not None:
        if model_data.sd_model.filename == checkpoint_info.filename:
            return model_data.sd_model
        model_data.sd_model = None
        model_data.loaded_sd_models = []
        model_management.unload_all_models()
    return None


def load_model(checkpoint_info=None, already_loaded_state_dict=None, forced_reload=False):
    from modules import sd_vae

    checkpoint_info = checkpoint_info or select_checkpoint()
    reused = _reuse(checkpoint_info, forced_reload and _reforge())
    if reused is not None:
        return reused
    state_dict = already_loaded_state_dict or safetensors.torch.load_file(checkpoint_info.filename)
    sd_model = forge_loader.load_model_for_a1111(checkpoint_info=checkpoint_info, state_dict=state_dict)
    sd_model.filename = checkpoint_info.filename
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    sd_vae.delete_base_vae()
    sd_vae.clear_loaded_vae()
    model_data.loaded_sd_models.insert(0, sd_model)
    model_data.set_sd_model(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    with torch.no_grad():
        sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)
    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    return load_model(info, forced_reload=forced_reload)
