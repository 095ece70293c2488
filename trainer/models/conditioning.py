"""Prompt → conditioning with the trainer's own text path (CLIP hidden states, SDXL pooled vector and time ids).

SD1: the last layer after the final layer norm (CLIP skip 1). SD2: the 23-layer tower's output (the OpenCLIP
penultimate block, then the final norm). SDXL: both towers' penultimate hidden states, concatenated (as SDXL
is conditioned at inference), and the second tower's projected pooled vector.
"""

from __future__ import annotations

import torch

MAX_TOKENS = 77


def encode_prompts(components, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states (B, 77, D), pooled (B, P) for SDXL else None). Gradients flow when enabled by the caller."""
    hidden, pooled = [], None
    for spec, tokenizer, encoder in zip(components.family.text_encoders, components.tokenizers,
                                        components.text_encoders):
        param = next(encoder.parameters())
        ids = tokenizer(list(texts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids.to(device or param.device)
        out = encoder(ids, output_hidden_states=spec.hidden_layer == "penultimate")
        hidden.append(out.last_hidden_state if spec.hidden_layer == "last" else out.hidden_states[-2])
        if spec.with_projection:
            pooled = out.text_embeds
    return torch.cat(hidden, dim=-1), pooled


def sdxl_time_ids(height: int, width: int, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """SDXL's six size conditions in pixels: original (h, w), crop top-left (0, 0), target (h, w)."""
    row = torch.tensor([height, width, 0, 0, height, width], dtype=dtype, device=device)
    return row.expand(batch, 6)
