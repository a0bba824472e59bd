"""Fake of the built-in Lora extension (``extensions-builtin/Lora/networks.py`` + ``lora_patches.py``,
A1111 v1.10.1, 82a973c0), importable as the top-level module ``networks``.

Reproduced per leaf module (``_tiny_ldm.Layer`` stands for the patched torch classes):
- the patched forward (``Layer.run``): with networks wanted and no backup, back the weights up
  to CPU; when the wanted set differs from the applied one, copy the backup back (stale or
  not) and add each wanted network; backups are never cleared when networks are removed;
- the patched ``_load_from_state_dict``: reset ``network_current_names`` and drop the backups
  on every module it visits, then load;
- names only on text-encoder and UNet leaves (``assign_network_names_to_compvis_modules``),
  never on the VAE. A "network" adds ``0.05 * multiplier`` to every named weight.
"""

import torch
from modules import _tiny_ldm, script_callbacks


class Network:
    def __init__(self, name, multiplier=1.0):
        self.name = name
        self.te_multiplier = multiplier
        self.unet_multiplier = multiplier
        self.dyn_dim = None


available_networks = {"detail": 1.0, "style": 1.0}
loaded_networks: list = []


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    loaded_networks.clear()
    for i, name in enumerate(names):
        if name in available_networks:
            loaded_networks.append(Network(name, (te_multipliers or [1.0] * len(names))[i]))


def assign_network_names_to_compvis_modules(sd_model):
    mapping = {}
    if getattr(sd_model, "conditioner", None) is not None:  # SDXL: f"{i}_{name}" inside embedder.wrapped
        roots = [(f"{i}_", e.wrapped) for i, e in enumerate(sd_model.conditioner.embedders)]
    else:
        roots = [("", sd_model.cond_stage_model)]
    for prefix, root in [*roots, ("diffusion_model_", sd_model.model.diffusion_model)]:
        for name, module in root.named_modules():
            layer_name = prefix + name.replace(".wrapped", "").replace(".", "_")
            mapping[layer_name] = module
            module.network_layer_name = layer_name
    sd_model.network_layer_mapping = mapping


def network_restore_weights_from_backup(self):
    w = getattr(self, "network_weights_backup", None)
    b = getattr(self, "network_bias_backup", None)
    with torch.no_grad():
        if w is not None:
            self.weight.copy_(w)
        if b is not None:
            self.bias.copy_(b)


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


def network_apply_weights(self):
    if getattr(self, "network_layer_name", None) is None or "weight" not in self._parameters:
        return
    wanted = tuple((n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in loaded_networks)
    current = getattr(self, "network_current_names", ())
    with torch.no_grad():
        if getattr(self, "network_weights_backup", None) is None and wanted != ():
            self.network_weights_backup = self.weight.to("cpu", copy=True)
            bias = self._parameters.get("bias")
            self.network_bias_backup = None if bias is None else bias.to("cpu", copy=True)
        if current != wanted:
            network_restore_weights_from_backup(self)
            for net in loaded_networks:
                self.weight.add_(0.05 * net.te_multiplier)
            self.network_current_names = wanted


class LoraPatches:
    def __init__(self):
        self.run = _tiny_ldm.Layer.run
        self.load = _tiny_ldm.Layer._load_from_state_dict

        def run(module):
            network_apply_weights(module)
            return self.run(module)

        def load(module, *args, **kwargs):
            network_reset_cached_weight(module)
            return self.load(module, *args, **kwargs)

        _tiny_ldm.Layer.run = run
        _tiny_ldm.Layer._load_from_state_dict = load

    def undo(self):
        _tiny_ldm.Layer.run = self.run
        _tiny_ldm.Layer._load_from_state_dict = self.load


originals = LoraPatches()
script_callbacks.on_model_loaded(assign_network_names_to_compvis_modules)
