"""Neo backend/patcher/base.py: `ModelPatcher` — `model` (the nn.Module), `load_device`, `offload_device`,
`lora_patches` ({(filename, strength_patch, strength_model, online_mode): {param key: [patch, …]}}), `lora_loader`
(one per model, shared by every clone: `model.lora_loader`), `clone()`, `add_patches(...)`, `refresh_loras()`."""

from __future__ import annotations

import copy

import torch

from backend.patcher.lora import LoraLoader


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.size = size
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.model_size()
        self.load_device = load_device or torch.device("cpu")
        self.offload_device = offload_device or torch.device("cpu")
        self.current_device = current_device or self.offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

    def model_size(self):
        if self.size > 0:
            return self.size
        from backend import memory_management

        self.size = memory_management.module_size(self.model)
        return self.size

    def clone(self):
        n = type(self).__new__(type(self))
        n.__dict__.update(self.__dict__)
        n.lora_patches = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self.lora_patches.items()}
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        """Record `patches` ({param key: [(diff)…] or diff}) under this file; the keys the model has are returned."""
        lora_identifier = (filename, strength_patch, strength_model, online_mode)
        this_patches = {}
        model_keys = set(k for k, _ in self.model.named_parameters())
        applied = []
        for key, value in patches.items():
            if key not in model_keys:
                continue
            diffs = value if isinstance(value, (list, tuple)) else [value]
            this_patches[key] = [(strength_patch, diff, strength_model) for diff in diffs]
            applied.append(key)
        self.lora_patches[lora_identifier] = this_patches
        return applied

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    def model_state_dict(self, filter_prefix=None):
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if filter_prefix is None or k.startswith(filter_prefix)}
