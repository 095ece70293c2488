"""Small pieces several modes share: prompt conditionings and one UNet call with SDXL's added conditioning."""

from __future__ import annotations

import torch

from ..models.conditioning import encode_prompts, sdxl_time_ids


def encode(ctx, texts: list[str], grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conditionings in the model dtype on the training device; with `grad`, through any text-encoder LoRA."""
    for encoder in ctx.components.text_encoders:
        encoder.to(ctx.device)
    with torch.set_grad_enabled(grad):
        hidden, pooled = encode_prompts(ctx.components, texts, ctx.device)
    return hidden.to(ctx.model_dtype), pooled.to(ctx.model_dtype) if pooled is not None else None


def encode_prompt(ctx, texts: list[str], trains_text_encoder: bool, grad: bool = False):
    """A mode's prompt (not a caption): through the host's own conditioning when it has one — the webui's, with its
    emphasis syntax, long prompts, CLIP skip and embeddings, as upstream — except while the text-encoder LoRA trains:
    its gradients need the trainer's text path, and one run uses one path for all its prompts."""
    host_encoder = ctx.components.prompt_encoder
    if host_encoder is None or trains_text_encoder:
        return encode(ctx, texts, grad)
    hidden, pooled = host_encoder(list(texts))
    return (hidden.to(ctx.device, ctx.model_dtype),
            pooled.to(ctx.device, ctx.model_dtype) if pooled is not None else None)


def predict(ctx, noisy: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor, pooled: torch.Tensor | None,
            size_px: tuple[int, int]) -> torch.Tensor:
    """ε (or v) prediction; `size_px` is (height, width) in pixels for SDXL's time ids."""
    batch = noisy.shape[0]
    added = None
    if ctx.components.family.is_sdxl:
        added = {"text_embeds": _batch(pooled, batch).to(ctx.model_dtype),
                 "time_ids": sdxl_time_ids(*size_px, batch, ctx.device, ctx.model_dtype)}
    return ctx.components.unet(noisy.to(ctx.model_dtype), t, _batch(hidden, batch).to(ctx.model_dtype),
                               added_cond_kwargs=added).sample


def _batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def free_vae_and_text(ctx, keep_text: bool) -> None:
    if not ctx.keep_vae:
        ctx.components.vae = None
    if not keep_text:
        ctx.components.text_encoders = []


class Prompts:
    """Prompt conditionings of a mode: encoded once, or — when the text-encoder LoRA trains (BASE) — encoded
    again at each use, under whatever multiplier the network has then."""

    def __init__(self, ctx, texts: dict[str, str], trains_text_encoder: bool):
        self.texts = dict(texts)
        self.trains_text_encoder = trains_text_encoder
        self.cached = {key: encode_prompt(ctx, [text], trains_text_encoder) for key, text in self.texts.items()}

    def get(self, ctx, key: str, grad: bool = True):
        if not self.trains_text_encoder:
            return self.cached[key]
        return encode(ctx, [self.texts[key]], grad=grad and torch.is_grad_enabled())
