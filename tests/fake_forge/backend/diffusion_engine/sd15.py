"""Neo backend/diffusion_engine/sd15.py: `StableDiffusion` (SD1). `get_learned_conditioning(list[str])` is
`@torch.inference_mode()`: it first calls `load_model_gpu(clip.patcher)` (which merges a pending LoRA into the text
encoder), then returns (B, 77·k, D) from `text_processing_engine` (CLIP-L: the last layer after the final layer norm,
or `hidden_states[-clip_skip]` + final layer norm). `set_clip_skip(n)` sets the engine's clip skip, which stays."""

from __future__ import annotations

import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, record
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


class StableDiffusion(ForgeDiffusionEngine):
    matched_guesses = ["SD15"]

    def __init__(self, model_config, unet, clip, vae, is_inpaint=False):
        super().__init__(model_config, unet, clip, vae, is_inpaint=is_inpaint)
        from modules import shared

        self.text_processing_engine = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_l, tokenizer=clip.tokenizer.clip_l,
            embedding_dir=getattr(shared.cmd_opts, "embeddings_dir", None), embedding_key="clip_l",
            embedding_expected_shape=clip.cond_stage_model.clip_l.transformer.config.hidden_size,
            emphasis_name=shared.opts.data.get("emphasis", "Original"), text_projection=False,
            minimal_clip_skip=1, clip_skip=1, return_pooled=False, final_layer_norm=True)
        self.is_sd1 = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        record(prompt)
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        return self.text_processing_engine(prompt)

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        _, token_count = self.text_processing_engine.process_texts([prompt])
        return token_count, self.text_processing_engine.get_target_prompt_token_count(token_count)
