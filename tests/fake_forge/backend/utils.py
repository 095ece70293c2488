"""Neo backend/utils.py: `load_torch_file(ckpt, safe_load=False, device=None)` — a .safetensors file's tensors
(memory-mapped; inference tensors when read under `torch.inference_mode()`, as forge_loader does), or a .ckpt/.pt
through `torch.load` (weights only with `safe_load`, its "state_dict" if any). `ObjectDict`: a dict with attribute access.

Test-only: `files_read`, the path of every `load_torch_file`."""

from __future__ import annotations

import os

import torch

files_read = []  # test-only


def load_torch_file(ckpt, safe_load=False, device=None):
    files_read.append(str(ckpt))
    device = device or torch.device("cpu")
    ext = os.path.splitext(str(ckpt))[1].lower()
    if ext in (".safetensors", ".sft"):
        import safetensors.torch

        return safetensors.torch.load_file(str(ckpt), device=str(device))
    if ext == ".gguf":
        raise NotImplementedError("the fake Forge reads no .gguf files")
    pl_sd = torch.load(ckpt, map_location=device, weights_only=bool(safe_load))
    return pl_sd.get("state_dict", pl_sd) if isinstance(pl_sd, dict) else pl_sd


class ObjectDict(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value
