"""Neo backend/nn/clip.py: `IntegratedCLIP`, one text tower of `forge_objects.clip.cond_stage_model`.

`.transformer` is a real `transformers.CLIPTextModel` with a `text_projection` Linear attached, and the tower has a
`logit_scale`; keys `clip_l.transformer.text_model.encoder.layers.{i}.self_attn.q_proj.weight`, `…mlp.fc1…`,
`clip_l.transformer.text_projection.weight`, `clip_l.logit_scale`. Its Linear layers are `ForgeOperations.Linear`
(built under `using_forge_operations`).

transformers ≥ 5 flattened `CLIPTextModel` (no `.text_model` level; Neo's pinned 4.56 has one). There the tower is a
`CLIPTextModelLevel`, a `CLIPTextModel` subclass whose `.text_model` is the real flat CLIPTextModel, so module paths,
keys and `isinstance(..., CLIPTextModel)` stay as with 4.x."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_level_class = None


def _clip_text_model_level():
    """CLIPTextModel with the `text_model` level put back (transformers ≥ 5), defined on first use."""
    global _level_class
    if _level_class is None:
        from transformers import CLIPTextModel, PreTrainedModel

        class CLIPTextModelLevel(CLIPTextModel):
            def __init__(self, config, text_model):
                PreTrainedModel.__init__(self, config)
                self.text_model = text_model

            def forward(self, *args, **kwargs):
                return self.text_model(*args, **kwargs)

            def get_input_embeddings(self):
                return self.text_model.embeddings.token_embedding

            def set_input_embeddings(self, value):
                self.text_model.embeddings.token_embedding = value

        CLIPTextModelLevel.__qualname__ = "CLIPTextModelLevel"
        _level_class = CLIPTextModelLevel
    return _level_class


def _count(tensors: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in tensors for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def text_config(tensors: dict, hidden_act: str, projection_dim: int):
    """A CLIPTextConfig sized from HF-named tensors (`text_model.*`)."""
    from transformers import CLIPTextConfig

    vocab, width = tensors["text_model.embeddings.token_embedding.weight"].shape
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=width,
        intermediate_size=tensors["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(tensors, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=tensors["text_model.embeddings.position_embedding.weight"].shape[0],
        projection_dim=projection_dim, hidden_act=hidden_act, layer_norm_eps=1e-5,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )


def make_text_model(config) -> nn.Module:
    from transformers import CLIPTextModel

    model = CLIPTextModel(config)
    if not hasattr(model, "text_model"):
        model = _clip_text_model_level()(config, model)
    return model


class IntegratedCLIP(nn.Module):
    def __init__(self, config, add_text_projection=True):
        super().__init__()
        self.transformer = make_text_model(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)), requires_grad=False)
        if add_text_projection:
            width = config.hidden_size
            self.transformer.text_projection = nn.Linear(width, config.projection_dim, bias=False)
