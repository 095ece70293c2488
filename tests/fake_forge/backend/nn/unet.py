"""Neo backend/nn/unet.py: `IntegratedUNet2DConditionModel`, the real UNet (`forge_objects.unet.model.diffusion_model`).

Built from the checkpoint's `model.diffusion_model.*` keys (LDM spelling: `input_blocks.1.1.transformer_blocks.0.attn1
.to_q.weight`, `middle_block.…`, `output_blocks.…`, `time_embed.0.weight`, `out.2.weight`, SDXL's `label_emb.0.0
.weight`); its `state_dict()` has exactly those keys. Linear layers are `ForgeOperations.Linear`. No forward."""

from __future__ import annotations

from backend.nn._tree import TreeModule, build_tree


class IntegratedUNet2DConditionModel(TreeModule):
    storage_dtype = None
    computation_dtype = None

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        raise NotImplementedError("the fake Forge's UNet has no forward (tests/fake_forge/README.md)")


def build_unet(tensors: dict, dtype) -> IntegratedUNet2DConditionModel:
    return build_tree(tensors, IntegratedUNet2DConditionModel, dtype)
