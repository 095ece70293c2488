"""Neo backend/patcher/lora.py: `LoraLoader`, the merge of LoRA patches into a model's weights (forge-api.md F4.4).

`refresh(lora_patches)` (under `torch.inference_mode()`): when the set of patches differs from `loaded_hash`, the
originals kept in `backup` are put back first, then each patched Parameter is **replaced** by a merged copy (computed
in fp32, cast back to its dtype); the original Parameter object goes into `backup` (on the offload device: the CPU,
so it is the very same tensor). The merge is not in place. The same set again does nothing.

A patch here is `(strength_patch, diff, strength_model)`: `weight · strength_model + strength_patch · diff` (the "diff"
adapter; LoRA files are not read by the fake). The key-map functions and the adapter types are not faked."""

from __future__ import annotations

import torch


def get_parameter(model, key):
    *path, name = key.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    return parent, name, getattr(parent, name)


def set_parameter(model, key, value):
    parent, name, _ = get_parameter(model, key)
    setattr(parent, name, value)


def merge_lora_to_weight(patches, weight, key="", computation_dtype=torch.float32):
    merged = weight.to(dtype=computation_dtype, copy=True)
    for strength_patch, diff, strength_model in patches:
        if strength_model != 1.0:
            merged *= strength_model
        merged += strength_patch * diff.to(device=merged.device, dtype=computation_dtype)
    return merged.to(weight.dtype)


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.online_backup = []
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        for key, weight in self.backup.items():
            set_parameter(self.model, key, weight)
        self.backup = {}
        all_patches = {}
        for patches in lora_patches.values():
            for key, current in patches.items():
                all_patches.setdefault(key, []).extend(current)
        for key, current in all_patches.items():
            try:
                _, _, weight = get_parameter(self.model, key)
            except AttributeError:
                print(f"[LORA] skipping {key}: not in the model")
                continue
            if key not in self.backup:
                self.backup[key] = weight.to(device=offload_device)
            merged = merge_lora_to_weight(current, weight, key)
            set_parameter(self.model, key, torch.nn.Parameter(merged, requires_grad=False))
        self.loaded_hash = hashes
