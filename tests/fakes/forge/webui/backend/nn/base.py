"""Stand-ins for Forge dfdcbab6's integrated modules (``backend/nn/unet.py``, ``vae.py``, ``clip.py``,
``base.py``). The real ones are built from configs; here a module tree is grown from the
component's state dict so that every parameter name is exactly the one Forge has (UNet / VAE:
checkpoint key minus ``model.diffusion_model.`` / ``first_stage_model.``; CLIP: HF
``CLIPTextModel`` names). Nothing is computed by them: the fake's processing renders from their
live parameters (tests/fakes/render.py).
"""

import torch


def place_parameters(root: torch.nn.Module, state_dict: dict) -> None:
    """``ForgeOperations`` loading: ``Parameter(tensor.to(dtype))`` under inference mode, so the
    parameter is an inference tensor sharing storage with the loaded tensor (§2)."""
    for key, value in state_dict.items():
        *path, name = key.split(".")
        module = root
        for seg in path:
            child = module._modules.get(seg)
            if child is None:
                child = torch.nn.Module()
                module.add_module(seg, child)
            module = child
        module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))


class ModuleDict(torch.nn.Module):
    """``backend/nn/base.py:7-11``: attribute access only (not a ``torch.nn.ModuleDict``)."""

    def __init__(self, module_dict):
        super().__init__()
        for k, v in module_dict.items():
            setattr(self, k, v)


class JointTextEncoder(ModuleDict):
    pass
