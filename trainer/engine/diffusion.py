"""DDPM pieces as small pure functions: timesteps, noising, targets, SNR (Ho et al., 2020; Salimans & Ho, 2022)."""

from __future__ import annotations

import torch


def sample_timesteps(batch: int, t_min: int, t_max: int, fixed_in_batch: bool, generator: torch.Generator,
                     device=None) -> torch.Tensor:
    """Integer timesteps in [t_min, t_max); one shared by the batch when `fixed_in_batch`."""
    count = 1 if fixed_in_batch else batch
    t = torch.randint(t_min, t_max, (count,), generator=generator, device=generator.device)
    return t.expand(batch).to(device) if fixed_in_batch else t.to(device)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε."""
    a = alpha_bar[t].view(-1, 1, 1, 1)
    return (a.sqrt() * latents.float() + (1 - a).sqrt() * noise.float()).to(latents.dtype)


def velocity(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0."""
    a = alpha_bar[t].view(-1, 1, 1, 1)
    return (a.sqrt() * noise.float() - (1 - a).sqrt() * latents.float()).to(latents.dtype)


def snr(t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t), shape (B,)."""
    a = alpha_bar[t]
    return a / (1 - a)
