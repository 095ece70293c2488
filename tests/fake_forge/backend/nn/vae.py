"""Neo backend/nn/vae.py: `IntegratedAutoencoderKL` (`forge_objects.vae.first_stage_model`), built from the file's
`first_stage_model.*` keys (LDM spelling: `encoder.down.0.block.0.norm1.weight`, `quant_conv.weight`, …).
`process_in(z) = (z - shift_factor) * scaling_factor`, `process_out` its inverse. No encode/decode."""

from __future__ import annotations

from backend.nn._tree import TreeModule, build_tree


class IntegratedAutoencoderKL(TreeModule):
    scaling_factor = 0.18215
    shift_factor = 0.0

    def encode(self, x, regulation=None):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")

    def decode(self, z):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scaling_factor

    def process_out(self, latent):
        return (latent / self.scaling_factor) + self.shift_factor


def build_vae(tensors: dict, dtype, scaling_factor: float) -> IntegratedAutoencoderKL:
    vae = build_tree(tensors, IntegratedAutoencoderKL, dtype)
    vae.scaling_factor = scaling_factor
    return vae
