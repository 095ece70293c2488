"""Neo backend/patcher/clip.py: `CLIP` (`forge_objects.clip`): `.cond_stage_model` is a `JointTextEncoder` (a
ModuleDict of `clip_l` [, `clip_g`] `IntegratedCLIP` towers; **not callable** with texts), `.tokenizer` an ObjectDict
of HF CLIPTokenizers by the same names, `.patcher` a ModelPatcher over the JointTextEncoder."""

from __future__ import annotations

import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher
from backend.utils import ObjectDict


class JointTextEncoder(torch.nn.ModuleDict):
    pass


class CLIP:
    def __init__(self, model_dict=None, tokenizer_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = JointTextEncoder(model_dict or {})
        self.tokenizer = ObjectDict(tokenizer_dict or {})
        self.patcher = ModelPatcher(self.cond_stage_model,
                                    load_device=memory_management.text_encoder_device(),
                                    offload_device=memory_management.text_encoder_offload_device())

    def clone(self):
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        return n
