"""Stand-ins for the model objects A1111 v1.10.1 (82a973c0) holds as ``shared.sd_model``: the SD1
``LatentDiffusion`` (``ldm`` repository, ``configs/v1-inference.yaml``) and the SDXL
``DiffusionEngine`` (``sgm`` repository, ``configs/sd_xl_base.yaml``, extended by
``modules/sd_models_xl.py``).

Each is a tree of plain modules whose parameter names are exactly the checkpoint keys
(SD1: ``model.diffusion_model.*``, ``cond_stage_model.transformer.text_model.*``,
``first_stage_model.*``; SDXL: ``conditioner.embedders.0.transformer.text_model.*`` (sgm
``FrozenCLIPEmbedder``), ``conditioner.embedders.1.model.*`` (sgm ``FrozenOpenCLIPEmbedder2``, the
open_clip layout with ``in_proj_weight``, ``text_projection``, ``logit_scale``)), plus the LDM
schedule buffer ``alphas_cumprod`` (a non-parameter ``state_dict`` entry, as in the real models).
Nothing is computed by these modules: the renderer (tests/fakes/render.py) reads their live
parameters whenever the model "runs".

``Layer`` stands for the real ``Linear`` / ``Conv2d`` / ``GroupNorm`` / ``LayerNorm`` / ``Embedding``
/ ``MultiheadAttention`` leaves (``kind`` says which): it owns parameters and is what the Lora
extension patches. ``Layer.run`` stands for ``forward``: the model calls it on every leaf of a
sub-model before that sub-model is used.
"""

import torch
from torch import nn


class Layer(nn.Module):
    def run(self):
        """``forward``; the Lora extension patches it (``networks.originals``)."""


class FrozenCLIPEmbedder(nn.Module):
    """``ldm.modules.encoders.modules.FrozenCLIPEmbedder`` (SD1) or its sgm namesake (SDXL embedder 0):
    the HF CLIP text model at ``.transformer``."""


class FrozenOpenCLIPEmbedder2(nn.Module):
    """``sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2`` (SDXL embedder 1): open_clip at ``.model``."""


def _kind(owner: str, name: str, value: torch.Tensor) -> str:
    if name == "in_proj_weight" or name == "in_proj_bias":
        return "MultiheadAttention"
    if name != "weight":
        return "Parameter"
    if value.ndim == 4:
        return "Conv2d"
    if value.ndim == 2:
        return "Embedding" if owner in ("token_embedding", "position_embedding") else "Linear"
    return "Norm"


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
        leaf.kind = "Parameter"
        module.add_module(owner, leaf)
    leaf.register_parameter(name, nn.Parameter(torch.empty_like(value), requires_grad=False))
    if getattr(leaf, "kind", "Parameter") == "Parameter":  # open_clip's bare parameters sit on a plain module
        leaf.kind = _kind(owner, name, value)


def run_layers(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, Layer):
            m.run()


class _Model(nn.Module):
    def _bookkeeping(self, renderer):
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
        """The live parameters under checkpoint names (the hijack's ``wrapped`` segments dropped;
        SDXL's ``cond_stage_model`` alias of the conditioner skipped)."""
        out = {}
        for n, p in self.named_parameters(remove_duplicate=False):
            key = ".".join(s for s in n.split(".") if s != "wrapped")
            if self.is_sdxl and key.startswith("cond_stage_model."):
                continue
            out[key] = p
        return out


class LatentDiffusion(_Model):
    def __init__(self, checkpoint_keys: dict, renderer):
        super().__init__()
        self.model = nn.Module()
        self.cond_stage_model = FrozenCLIPEmbedder()
        self.first_stage_model = nn.Module()
        for key, value in checkpoint_keys.items():
            _place(self, key, value)
        self._bookkeeping(renderer)

    def get_learned_conditioning(self, prompts):
        run_layers(self.cond_stage_model)
        self.renderer.sync(self.live_checkpoint_tensors(), ("cond_stage_model.",))
        return self.renderer.encode(list(prompts))


class DiffusionEngine(_Model):
    """SDXL. ``get_learned_conditioning(prompts)`` as patched by ``modules/sd_models_xl.py``: a dict
    with ``crossattn`` and ``vector``."""

    def __init__(self, checkpoint_keys: dict, renderer):
        super().__init__()
        self.model = nn.Module()
        self.conditioner = nn.Module()
        self.conditioner.embedders = nn.ModuleList([FrozenCLIPEmbedder(), FrozenOpenCLIPEmbedder2()])
        self.first_stage_model = nn.Module()
        for key, value in checkpoint_keys.items():
            _place(self, key, value)
        self._bookkeeping(renderer)
        self.is_sd1, self.is_sdxl = False, True

    def get_learned_conditioning(self, prompts):
        run_layers(self.conditioner)
        self.renderer.sync(self.live_checkpoint_tensors(), ("conditioner.",))
        return self.renderer.encode(list(prompts))
