"""Neo backend/modules/k_model.py: `KModel`, `forge_objects.unet.model` — `.diffusion_model` (the UNet), `.predictor`
(the schedule), `storage_dtype`, `computation_dtype`. `apply_model(x, sigma, c_crossattn=…, y=…)` (denoised x0) is
not faked: it raises NotImplementedError."""

from __future__ import annotations

from torch import nn


class KModel(nn.Module):
    def __init__(self, model, predictor, config=None, storage_dtype=None, computation_dtype=None):
        super().__init__()
        self.config = config
        self.storage_dtype = storage_dtype
        self.computation_dtype = computation_dtype
        self.diffusion_model = model
        self.predictor = predictor
        self.diffusion_model.requires_grad_(False)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        raise NotImplementedError("the fake Forge's UNet has no forward (tests/fake_forge/README.md)")

    def memory_required(self, input_shape):
        return 0
