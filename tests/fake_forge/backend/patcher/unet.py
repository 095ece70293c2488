"""Neo backend/patcher/unet.py: `UnetPatcher`, `forge_objects.unet` (a ModelPatcher whose `.model` is the KModel)."""

from __future__ import annotations

from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    @classmethod
    def from_model(cls, model, diffusers_scheduler=None, config=None, k_predictor=None):
        from backend import memory_management

        return cls(model, load_device=memory_management.get_torch_device(),
                   offload_device=memory_management.unet_offload_device())

    def clone(self):
        n = super().clone()
        n.controlnet_linked_list = getattr(self, "controlnet_linked_list", None)
        return n
