"""Neo backend/patcher/vae.py: `VAE` (`forge_objects.vae`): `.first_stage_model` (the IntegratedAutoencoderKL),
`.patcher`. `encode` / `decode` are not faked (NotImplementedError)."""

from __future__ import annotations

from backend import memory_management
from backend.patcher.base import ModelPatcher


class VAE:
    def __init__(self, model=None, no_init=False):
        if no_init:
            return
        self.first_stage_model = model.eval()
        self.latent_channels = 4
        self.patcher = ModelPatcher(self.first_stage_model, load_device=memory_management.vae_device(),
                                    offload_device=memory_management.vae_offload_device())

    def clone(self):
        n = VAE(no_init=True)
        n.patcher = self.patcher.clone()
        n.first_stage_model = self.first_stage_model
        n.latent_channels = self.latent_channels
        return n

    def encode(self, pixel_samples):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")

    def decode(self, samples_in):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")
