"""The engine's data types: what a mode's step returns, what every step may use, where a pass's LoRA goes, and
how a pass ended. Modes import these without importing the save stack."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..networks.io import lora_file_name
from . import diffusion, noise
from .control import Status
from .distributed import SINGLE, World


@dataclass
class StepOutput:
    pred: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor  # (B,)
    mask: torch.Tensor | None = None  # (B, 1, h, w) latent-sized, 1 = counts in the loss


@dataclass
class TrainContext:
    """What every step may use. Built once per job by the runner; `settings`, `seed`, `generator`, `rng` and
    `network` are those of the pass being trained."""

    components: object
    settings: object
    device: torch.device
    model_dtype: torch.dtype
    lora_dtype: torch.dtype
    seed: int
    generator: torch.Generator
    rng: random.Random
    alpha_bar: torch.Tensor
    network: object | None = None  # networks.network.Network
    names: object | None = None  # networks.compat.ModelNames, computed at the first save
    keep_vae: bool = False  # a hook (previews) decodes with the VAE after the data is cached: modes keep it
    world: World = SINGLE  # this process among the launched ones (engine/distributed.py); one process by default

    @property
    def is_v_prediction(self) -> bool:
        return self.components.is_v_prediction

    @property
    def computes_in_half(self) -> bool:
        """CUDA with a half-precision model: the forward runs under autocast in that dtype."""
        return self.device.type == "cuda" and self.model_dtype in (torch.float16, torch.bfloat16)

    @property
    def needs_loss_scaling(self) -> bool:
        """CUDA computing in fp16 (an fp16 model under autocast): small gradients underflow to zero unless the loss
        is scaled, as accelerate's fp16 mixed precision does. bf16 has fp32's exponent range and needs none. torch's
        GradScaler cannot unscale fp16 parameters' gradients, so fp16 LoRA weights train unscaled (the runner warns)."""
        return self.device.type == "cuda" and self.model_dtype == torch.float16 and self.lora_dtype != torch.float16

    def autocast(self):
        """Autocast only where it helps: CUDA with a half-precision model under fp32 adapters."""
        if self.computes_in_half:
            return torch.autocast(self.device.type, dtype=self.model_dtype)
        return contextlib.nullcontext()

    def noise_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """The training noise ε for a batch like `tensor`, with the pass's noise_offset / multires settings."""
        return noise.training_noise(tensor, self.settings, self.generator)

    def timesteps(self, batch: int) -> torch.Tensor:
        s = self.settings
        return diffusion.sample_timesteps(batch, s.train_min_timesteps, s.train_max_timesteps,
                                          s.train_fixed_timsteps_in_batch, self.generator, self.device)

    def diffusion_target(self, latents, noise, t) -> torch.Tensor:
        return diffusion.velocity(latents, noise, t, self.alpha_bar) if self.is_v_prediction else noise


@dataclass
class Output:
    """Where and how a pass's LoRA is written."""

    directory: Path
    name: str  # save_lora_name
    suffix: str = ""  # "_copy" for Difference's first pass
    overwrite: bool = False
    mode: str = "LoRA"
    tag_frequency: dict | None = None
    resolution: tuple[int, int] | None = None
    model_name: str = ""
    extra_metadata: dict = field(default_factory=dict)

    def path(self, steps: int | None = None) -> Path:
        suffix = self.suffix + (f"_{steps}steps" if steps is not None else "")
        return Path(self.directory) / lora_file_name(self.name, suffix)


@dataclass
class Trained:
    """How one engine run ended: the status, the steps done, the losses, and what a later save needs."""

    status: Status
    steps: int
    losses: list[float]
    optimizer: object
    path: Path | None = None  # the stop-and-save file


@dataclass
class Result:
    """How a job ended, for the CLI, the tab and the queue."""

    status: Status
    path: Path | None
    steps: int
    losses: list[float]
    message: str
    report: dict | None = None
    extras: dict = field(default_factory=dict)  # what the job's hooks returned at the end (e.g. "samples")


def save_points(iterations: int, every: int) -> set[int]:
    """Periodic saves at every N completed steps, not counting the final one (saved as the main file)."""
    return set(range(every, iterations, every)) if every > 0 else set()
