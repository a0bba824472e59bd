"""Fake of ``ldm_patched/modules/model_base.py`` (reForge 3b56b268, Forge Classic 1f95d717, Forge
``previous`` bfee03d8): ``BaseModel`` with ``.diffusion_model`` (LDM names: the checkpoint key minus
``model.diffusion_model.``) and ``.model_config``. The UNet is a tree of plain modules whose
parameters carry exactly those names, in the UNet storage dtype; nothing is computed by it (the
renderer reads the live parameters).
"""

import torch


def module_tree(state_dict, dtype=None, requires_grad=True):
    """Plain modules whose parameters are named as ``state_dict``'s keys, values copied."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        *path, name = key.split(".")
        module = root
        for seg in path:
            if seg not in module._modules:
                module.add_module(seg, torch.nn.Module())
            module = module._modules[seg]
        data = value.detach().to(dtype or value.dtype, copy=True)
        module.register_parameter(name, torch.nn.Parameter(data, requires_grad=requires_grad))
    return root


class BaseModel(torch.nn.Module):
    def __init__(self, model_config, unet_state_dict, dtype):
        super().__init__()
        self.model_config = model_config
        self.diffusion_model = module_tree(unet_state_dict, dtype)
        self.device = torch.device("cpu")
