"""Neo modules/devices.py, a shim over backend.memory_management (forge-api.md F8): `device` = get_torch_device()
(the CPU here), `dtype` fp32 when the UNet's is fp32 else fp16, `dtype_unet`, `dtype_vae`, `dtype_inference`;
`autocast()` / `without_autocast()` are nullcontext, `torch_gc()` is `soft_empty_cache()`, `test_for_nans` a no-op."""

import contextlib

import torch

from backend import memory_management

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = memory_management.get_torch_device()
dtype_unet = memory_management.unet_dtype()
dtype = torch.float32 if dtype_unet == torch.float32 else torch.float16
dtype_vae = memory_management.vae_dtype()
dtype_inference = memory_management.get_computation_dtype()
unet_needs_upcast = False


def get_optimal_device():
    return memory_management.get_torch_device()


def torch_gc():
    memory_management.soft_empty_cache()


def torch_npu_set_device():
    pass


def test_for_nans(x, where):
    pass


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()
