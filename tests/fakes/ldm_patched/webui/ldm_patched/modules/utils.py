"""Fake of ``ldm_patched/modules/utils.py`` (reForge 3b56b268 :131-197, Forge Classic 1f95d717, Forge
``previous`` bfee03d8): the state-dict renames and the attribute setters ``ModelPatcher`` uses.

Reproduced: ``state_dict_prefix_replace`` pops the matched keys from its input and returns the
input itself (``filter_keys=False``) or a new dict of the renamed keys only (``filter_keys=True``);
``transformers_convert`` renames OpenCLIP keys to the Hugging Face CLIP layout and splits each
fused ``in_proj`` into three equal row blocks (views) for q, k, v (32 layers at most);
``clip_text_transformers_convert`` also moves ``text_projection`` transposed (a copy);
``set_attr_param`` puts a *new* Parameter in place, ``copy_to_param`` copies in place.
"""

import torch


def state_dict_prefix_replace(state_dict, replace_prefix, filter_keys=False):
    out = {} if filter_keys else state_dict
    for rp, to in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(rp)]:
            out[to + key[len(rp):]] = state_dict.pop(key)
    return out


def state_dict_key_replace(state_dict, keys_to_replace):
    for k, to in keys_to_replace.items():
        if k in state_dict:
            state_dict[to] = state_dict.pop(k)
    return state_dict


_TOP = {"positional_embedding": "embeddings.position_embedding.weight",
        "token_embedding.weight": "embeddings.token_embedding.weight",
        "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}


def transformers_convert(sd, prefix_from, prefix_to, number):
    for k, to in _TOP.items():
        if prefix_from + k in sd:
            sd[prefix_to + to] = sd.pop(prefix_from + k)
    for n in range(number):
        for part, to in _BLOCK.items():
            for y in ("weight", "bias"):
                k = f"{prefix_from}transformer.resblocks.{n}.{part}.{y}"
                if k in sd:
                    sd[f"{prefix_to}encoder.layers.{n}.{to}.{y}"] = sd.pop(k)
        for y in ("weight", "bias"):
            k = f"{prefix_from}transformer.resblocks.{n}.attn.in_proj_{y}"
            if k in sd:
                w = sd.pop(k)
                rows = w.shape[0] // 3
                for i, p in enumerate(("q", "k", "v")):
                    sd[f"{prefix_to}encoder.layers.{n}.self_attn.{p}_proj.{y}"] = w[rows * i:rows * (i + 1)]
    return sd


def clip_text_transformers_convert(sd, prefix_from, prefix_to):
    sd = transformers_convert(sd, prefix_from, f"{prefix_to}text_model.", 32)
    if f"{prefix_from}text_projection.weight" in sd:
        sd[f"{prefix_to}text_projection.weight"] = sd.pop(f"{prefix_from}text_projection.weight")
    if f"{prefix_from}text_projection" in sd:
        sd[f"{prefix_to}text_projection.weight"] = sd.pop(f"{prefix_from}text_projection").transpose(0, 1).contiguous()
    return sd


def get_attr(obj, attr):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj, attr, value):
    *path, name = attr.split(".")
    for p in path:
        obj = getattr(obj, p)
    prev = getattr(obj, name)
    setattr(obj, name, value)
    return prev


def set_attr_param(obj, attr, value):
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj, attr, value):
    get_attr(obj, attr).data.copy_(value)
