"""Stand-in for the SD1 ``LatentDiffusion`` object A1111 v1.10.1 (82a973c0) holds as ``shared.sd_model``.

The real class comes from the ``ldm`` repository (``configs/v1-inference.yaml``); here it is a tree
of plain modules whose parameter names are exactly the checkpoint keys
(``model.diffusion_model.*``, ``cond_stage_model.transformer.text_model.*``,
``first_stage_model.*``), plus the LDM schedule buffer ``alphas_cumprod`` (a non-parameter
``state_dict`` entry, as in the real model). Nothing is computed by these modules: the renderer
(tests/fakes/render.py) reads their live parameters whenever the model "runs".

``Layer`` stands for the real ``Linear`` / ``Conv2d`` / ``GroupNorm`` / ``LayerNorm`` / ``Embedding``
leaves: it owns parameters and is what the Lora extension patches. ``Layer.run`` stands for
``forward``: the model calls it on every leaf of a sub-model before that sub-model is used.
"""

import torch
from torch import nn


class Layer(nn.Module):
    def run(self):
        """``forward``; the Lora extension patches it (``networks.originals``)."""


class FrozenCLIPEmbedder(nn.Module):
    """``ldm.modules.encoders.modules.FrozenCLIPEmbedder``: the HF CLIP text model at ``.transformer``."""


def _place(root: nn.Module, key: str, value: torch.Tensor) -> None:
    *path, owner, name = key.split(".")
    module = root
    for seg in path:
        child = module._modules.get(seg)
        if child is None:
            child = nn.Module()
            module.add_module(seg, child)
        module = child
    leaf = module._modules.get(owner)
    if leaf is None:
        leaf = Layer()
        module.add_module(owner, leaf)
    leaf.register_parameter(name, nn.Parameter(torch.empty_like(value), requires_grad=False))


def run_layers(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, Layer):
            m.run()


class LatentDiffusion(nn.Module):
    def __init__(self, checkpoint_keys: dict, renderer):
        super().__init__()
        self.model = nn.Module()
        self.cond_stage_model = FrozenCLIPEmbedder()
        self.first_stage_model = nn.Module()
        for key, value in checkpoint_keys.items():
            _place(self, key, value)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float())
        self.__dict__["renderer"] = renderer  # not a submodule
        # set_model_type / bookkeeping (modules/sd_models.py), filled by load_model_weights
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_ssd, self.is_sd3 = True, False, False, False, False
        self.latent_channels = 4
        self.lowvram = False
        self.sd_model_hash = None
        self.sd_model_checkpoint = None
        self.sd_checkpoint_info = None
        self.cond_stage_model_empty_prompt = None
        self.base_vae = None
        self.loaded_vae_file = None

    def live_checkpoint_tensors(self) -> dict:
        """The live parameters under checkpoint names (the hijack's ``wrapped`` segments dropped)."""
        return {".".join(s for s in n.split(".") if s != "wrapped"): p for n, p in self.named_parameters()}

    def get_learned_conditioning(self, prompts):
        run_layers(self.cond_stage_model)
        self.renderer.sync(self.live_checkpoint_tensors(), ("cond_stage_model.",))
        return self.renderer.encode(list(prompts))
