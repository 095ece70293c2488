"""Neo backend/memory_management.py as it is under `--cpu` (forge-api.md F4.2, F5, F8).

The device and the offload device are the CPU (`cpu_mode()` is True, `vram_state` is `VRAMState.DISABLED`). Storage
dtypes on the CPU: UNet fp32, text encoders **fp16** ("even on CPU"; cast at forward), VAE fp32 (the CPU has no bf16
VAE here). `load_models_gpu` keeps `current_loaded_models` (most recent first); loading a patcher calls its
`refresh_loras()` — that is where a LoRA is merged into (or restored from) the weights. `free_memory(memory_required,
device, keep_loaded=[])` (no `free_all=`) unloads least recent first until enough is free; `unload_all_models()` is
`free_memory(1e30, get_torch_device())`: every model goes to its offload device, **LoRA merges stay**.

Test-only: `unload_all_models_calls`, `soft_empty_cache_calls` (counts), `load_models_gpu_calls` (one list of
patchers per call)."""

from __future__ import annotations

import enum

import psutil
import torch

unload_all_models_calls = 0  # test-only
soft_empty_cache_calls = 0  # test-only
load_models_gpu_calls = []  # test-only: the patchers of every load_models_gpu(...)


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


cpu_state = CPUState.CPU
vram_state = VRAMState.DISABLED
set_vram_to = VRAMState.NORMAL_VRAM


def cpu_mode():
    return cpu_state == CPUState.CPU


def get_torch_device():
    return torch.device("cpu")


def get_total_memory(dev=None, torch_total_too=False):
    total = psutil.virtual_memory().total
    return (total, total) if torch_total_too else total


total_vram = get_total_memory(get_torch_device()) / (1024 * 1024)  # MB
total_ram = psutil.virtual_memory().total / (1024 * 1024)


def get_free_memory(dev=None, torch_free_too=False):
    free = psutil.virtual_memory().available
    return (free, free) if torch_free_too else free


def unet_offload_device():
    return torch.device("cpu")


def unet_inital_load_device(parameters=0, dtype=None):
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def text_encoder_offload_device():
    return torch.device("cpu")


def vae_device():
    return torch.device("cpu")


def vae_offload_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_dtype(device=None, model_params=0, supported_dtypes=(torch.float16, torch.bfloat16, torch.float32)):
    return torch.float32  # fp32 on the CPU


def text_encoder_dtype(device=None):
    return torch.float16  # "fp16 storage by default even on CPU"


def vae_dtype(device=None, allowed_dtypes=()):
    return torch.float32  # bf16 only where supported: not on this CPU fake


def get_computation_dtype(inference_device=None, parameters=0, supported_dtypes=()):
    return torch.float32


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def module_size(module, exclude_device=None, include_device=None, return_split=False):
    """Bytes of a module's parameters and buffers."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if exclude_device is not None and t.device == exclude_device:
            continue
        if include_device is not None and t.device != include_device:
            continue
        total += t.nelement() * t.element_size()
    return (total, total, 0) if return_split else total


def cast_to_device(tensor, device, dtype, copy=False):
    return tensor.to(device=device, dtype=dtype, copy=copy)


class LoadedModel:
    """One patcher on its load device: `model` (the patcher), `real_model`, `device`."""

    def __init__(self, model):
        self.model = model
        self.model_accelerated = False
        self.device = model.load_device
        self.real_model = None
        self.inclusive_memory = 0
        self.exclusive_memory = 0

    def compute_inclusive_exclusive_memory(self):
        self.inclusive_memory = self.exclusive_memory = module_size(self.model.model)

    def model_memory(self):
        return module_size(self.model.model)

    def model_load(self, model_gpu_memory_when_using_cpu_swap=-1):
        self.model.refresh_loras()  # the LoRA merge happens here (F4.4)
        self.real_model = self.model.model.to(self.device)
        self.model.current_device = self.device
        return self.real_model

    def model_unload(self, avoid_model_moving=False):
        self.model.model.to(self.model.offload_device)  # LoRA merges are not undone (F5)
        self.model.current_device = self.model.offload_device
        self.real_model = None

    def __eq__(self, other):
        return isinstance(other, LoadedModel) and self.model is other.model

    __hash__ = object.__hash__


current_loaded_models: list[LoadedModel] = []


def minimum_inference_memory():
    return 1024 * 1024 * 1024


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 — Neo's signature
    """Unload the least recently loaded models on `device` (not in `keep_loaded`: LoadedModels or patchers) until
    more than `memory_required` bytes are free."""
    unloaded = []
    for i in range(len(current_loaded_models) - 1, -1, -1):
        if get_free_memory(device) > memory_required:
            break
        shift = current_loaded_models[i]
        if shift.device == device and shift not in keep_loaded and not any(shift.model is k for k in keep_loaded):
            unloaded.append(current_loaded_models.pop(i))
    for m in unloaded:
        m.model_unload()
    return unloaded


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    """Each patcher onto its load device; one already loaded only moves to the front (no LoRA refresh), another
    patcher of the same model (a clone) is unloaded first."""
    load_models_gpu_calls.append(list(models))
    for patcher in models:
        existing = next((m for m in current_loaded_models if m.model is patcher), None)
        if existing is not None:
            current_loaded_models.remove(existing)
            current_loaded_models.insert(0, existing)
            continue
        for other in [m for m in current_loaded_models if m.model.model is patcher.model]:
            current_loaded_models.remove(other)
            other.model_unload()
        loaded = LoadedModel(patcher)
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    global unload_all_models_calls
    unload_all_models_calls += 1
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force=False):
    global soft_empty_cache_calls
    soft_empty_cache_calls += 1
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def cleanup_models():
    pass
