"""Fake of ``modules/devices.py`` (A1111 v1.10.1, 82a973c0), CPU and fp32 only."""

import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = dtype_vae = dtype_unet = dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False


def autocast(disable=False):
    return contextlib.nullcontext()  # what A1111 returns for fp32 inference


def without_autocast(disable=False):
    return contextlib.nullcontext()


def torch_gc():
    pass
