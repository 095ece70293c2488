"""A minimal, honest reference LoRA step — the cost a lean hand-written loop pays.

diffusers UNet2DConditionModel, plain low-rank adapters (forward hooks) on the same layers as our lierla, torch
AdamW, latents and text embeddings precomputed, MSE on ε. No weighting, no logging, no checks.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class HookedLowRank(nn.Module):
    """down/up beside one Linear or Conv2d, added to its output by a forward hook."""

    def __init__(self, layer: nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(layer, nn.Linear):
            self.down = nn.Linear(layer.in_features, rank, bias=False)
            self.up = nn.Linear(rank, layer.out_features, bias=False)
        else:
            self.down = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, bias=False)
            self.up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scale = alpha / rank
        self.layer = [layer]
        self.handle = None

    def hook(self, module, args, out):
        return out + self.up(self.down(args[0])) * self.scale

    def attach(self):
        self.handle = self.layer[0].register_forward_hook(self.hook)

    def detach(self):
        self.handle.remove()


class ReferenceLoop:
    def __init__(self, unet, layers, latents, hidden, alpha_bar, rank=16, alpha=8.0, lr=1e-4, added=None):
        self.unet, self.latents, self.hidden, self.alpha_bar, self.added = unet, latents, hidden, alpha_bar, added
        self.adapters = nn.ModuleList(HookedLowRank(layer, rank, alpha) for layer in layers)
        self.optimizer = torch.optim.AdamW(self.adapters.parameters(), lr=lr)
        self.generator = torch.Generator(latents.device).manual_seed(1)

    def step(self) -> float:
        noise = torch.randn(self.latents.shape, generator=self.generator, device=self.latents.device)
        t = torch.randint(0, 1000, (self.latents.shape[0],), generator=self.generator, device=self.latents.device)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * self.latents + (1 - a).sqrt() * noise
        pred = self.unet(noisy, t, self.hidden, added_cond_kwargs=self.added).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def attach(self):
        for adapter in self.adapters:
            adapter.attach()

    def detach(self):
        for adapter in self.adapters:
            adapter.detach()
