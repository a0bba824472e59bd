"""Fake of ``backend/utils.py`` (Forge dfdcbab6): attribute helpers the LoRA loader uses."""

import torch


def get_attr_with_parent(obj, attr):
    attrs = attr.split(".")
    parent = obj
    for name in attrs[:-1]:
        parent = getattr(parent, name)
    return parent, attrs[-1], getattr(parent, attrs[-1])


def set_attr_raw(obj, attr, value):
    parent, name, _ = get_attr_with_parent(obj, attr)
    setattr(parent, name, value)


def tensor2parameter(x):
    if isinstance(x, torch.nn.Parameter):
        return x
    return torch.nn.Parameter(x, requires_grad=False)
