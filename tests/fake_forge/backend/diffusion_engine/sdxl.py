"""Neo backend/diffusion_engine/sdxl.py: `StableDiffusionXL`. `get_learned_conditioning(list[str])` is
`@torch.inference_mode()`: `load_model_gpu(clip.patcher)`, then {"crossattn": (B, 77·k, D_l + D_g), "vector":
(B, pooled_g + 6·256)}: both towers' `hidden_states[-max(clip_skip, 2)]` without final layer norm, concatenated;
the vector is CLIP-G's pooled output (final layer norm, EOS token, text_projection) followed by the sinusoidal
embeddings of (height, width, crop top 0, crop left 0, target height, target width), read from the prompt list's
`width`/`height` attributes (1024 by default). A negative prompt list (`is_negative_prompt`) of empty strings gives
zeros."""

from __future__ import annotations

import math

import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, record
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1) if dim % 2 else embedding


class Timestep(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class StableDiffusionXL(ForgeDiffusionEngine):
    matched_guesses = ["SDXL"]

    def __init__(self, model_config, unet, clip, vae, is_inpaint=False):
        super().__init__(model_config, unet, clip, vae, is_inpaint=is_inpaint)
        from modules import shared

        emphasis_name = shared.opts.data.get("emphasis", "Original")
        embeddings_dir = getattr(shared.cmd_opts, "embeddings_dir", None)
        towers = clip.cond_stage_model
        self.text_processing_engine_l = ClassicTextProcessingEngine(
            text_encoder=towers.clip_l, tokenizer=clip.tokenizer.clip_l, embedding_dir=embeddings_dir,
            embedding_key="clip_l", embedding_expected_shape=towers.clip_l.transformer.config.hidden_size,
            emphasis_name=emphasis_name, text_projection=False, minimal_clip_skip=2, clip_skip=2,
            return_pooled=False, final_layer_norm=False)
        self.text_processing_engine_g = ClassicTextProcessingEngine(
            text_encoder=towers.clip_g, tokenizer=clip.tokenizer.clip_g, embedding_dir=embeddings_dir,
            embedding_key="clip_g", embedding_expected_shape=towers.clip_g.transformer.config.hidden_size,
            emphasis_name=emphasis_name, text_projection=True, minimal_clip_skip=2, clip_skip=2,
            return_pooled=True, final_layer_norm=False)
        self.embedder = Timestep(256)
        self.is_sdxl = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip
        self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        record(prompt)
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_l = self.text_processing_engine_l(prompt)
        cond_g, clip_pooled = self.text_processing_engine_g(prompt)
        width = getattr(prompt, "width", 1024) or 1024
        height = getattr(prompt, "height", 1024) or 1024
        is_negative_prompt = getattr(prompt, "is_negative_prompt", False)
        crop_w, crop_h = 0, 0
        target_width, target_height = width, height
        out = [self.embedder(torch.Tensor([v])) for v in (height, width, crop_h, crop_w, target_height, target_width)]
        flat = torch.flatten(torch.cat(out)).unsqueeze(dim=0).repeat(clip_pooled.shape[0], 1).to(clip_pooled)
        force_zero_negative_prompt = is_negative_prompt and all(x == "" for x in prompt)
        if force_zero_negative_prompt:
            clip_pooled = torch.zeros_like(clip_pooled)
            cond_l = torch.zeros_like(cond_l)
            cond_g = torch.zeros_like(cond_g)
        return {"crossattn": torch.cat([cond_l, cond_g], dim=2), "vector": torch.cat([clip_pooled, flat], dim=1)}

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        _, token_count = self.text_processing_engine_l.process_texts([prompt])
        return token_count, self.text_processing_engine_l.get_target_prompt_token_count(token_count)
