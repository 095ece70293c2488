"""The one training loop. Modes supply `step()` (prediction, target, timesteps); the engine owns the rest:
loss and min-SNR weighting, backward, optimizer and schedule, exactly `train_iterations` steps, periodic saves,
Stop / Stop-and-Save, the CSV log, progress.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..networks.compat import ModelNames, names_from_components
from ..networks.io import lora_file_name, save_network
from ..networks.metadata import build_metadata
from ..networks.network import Network
from . import diffusion
from .control import JobControl
from .loss import min_snr_weight, per_sample_loss
from .optim import build_optimizer, build_scheduler, current_lrs, is_schedule_free, step_scheduler

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    pred: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor  # (B,)
    mask: torch.Tensor | None = None


@dataclass
class TrainContext:
    """What every step may use. Built once per job by the runner."""

    components: object
    settings: object
    device: torch.device
    model_dtype: torch.dtype
    lora_dtype: torch.dtype
    seed: int
    generator: torch.Generator
    rng: random.Random
    alpha_bar: torch.Tensor
    network: Network | None = None
    names: ModelNames | None = None

    @property
    def is_v_prediction(self) -> bool:
        return self.components.is_v_prediction

    def autocast(self):
        """Autocast only where it helps: CUDA with a half-precision model under fp32 adapters."""
        if self.device.type == "cuda" and self.model_dtype in (torch.float16, torch.bfloat16):
            return torch.autocast("cuda", dtype=self.model_dtype)
        return contextlib.nullcontext()

    def noise_like(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.randn(tensor.shape, generator=self.generator, device=self.generator.device).to(tensor)

    def timesteps(self, batch: int) -> torch.Tensor:
        s = self.settings
        return diffusion.sample_timesteps(batch, s.train_min_timesteps, s.train_max_timesteps,
                                          s.train_fixed_timsteps_in_batch, self.generator, self.device)

    def diffusion_target(self, latents, noise, t) -> torch.Tensor:
        return diffusion.velocity(latents, noise, t, self.alpha_bar) if self.is_v_prediction else noise


@dataclass
class Output:
    """Where and how the LoRA is written."""

    directory: Path
    name: str  # save_lora_name
    suffix: str = ""  # "_copy" for Difference's first pass
    overwrite: bool = False
    mode: str = "LoRA"
    tag_frequency: dict | None = None
    resolution: tuple[int, int] | None = None
    model_name: str = ""
    extra_metadata: dict = field(default_factory=dict)
    save_final: bool = True  # False: a pass whose result is used but not kept (Difference's copier)

    def path(self, steps: int | None = None) -> Path:
        suffix = self.suffix + (f"_{steps}steps" if steps is not None else "")
        return Path(self.directory) / lora_file_name(self.name, suffix)


@dataclass
class Result:
    status: str  # "finished" | "stopped" | "stopped_saved"
    path: Path | None
    steps: int
    losses: list[float]
    message: str
    report: dict | None = None


def save_points(iterations: int, every: int) -> set[int]:
    """Periodic saves at every N completed steps, not counting the final one (saved as the main file)."""
    return set(range(every, iterations, every)) if every > 0 else set()


def run_engine(ctx: TrainContext, mode, output: Output, control: JobControl, started_at: float | None = None,
               log_csv=None) -> Result:
    s = ctx.settings
    network = ctx.network
    unet = ctx.components.unet
    iterations = s.train_iterations
    groups = network.param_groups(s.train_learning_rate, s.train_textencoder_learning_rate)
    if not groups:
        raise UserError("no layers to train: the selected network_blocks contain no modules for this network "
                        "type (select more blocks, or BASE)")
    optimizer = build_optimizer(s.train_optimizer, groups, network, s.train_learning_rate, s.train_optimizer_settings)
    scheduler = build_scheduler(s.train_lr_scheduler, optimizer, iterations, s, s.train_lr_scheduler_settings)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda" and ctx.lora_dtype == torch.float16)
    if s.use_gradient_checkpointing:
        enable_gradient_checkpointing(unet, ctx.components.text_encoders if mode.trains_text_encoder else [])
    network.train()

    started_at = started_at or time.time()
    saves = save_points(iterations, s.save_per_steps)
    losses: list[float] = []
    ema = None
    t0 = time.perf_counter()
    progress = _progress_bar(iterations)
    step = 0
    status, path = "finished", None
    try:
        for step in range(1, iterations + 1):
            loss_value = train_step(ctx, mode, step - 1, optimizer, scheduler, scaler)
            if not math.isfinite(loss_value):
                raise UserError(f"the loss became {loss_value} at step {step}; lower train_learning_rate or use "
                                f"fp32/bf16 precision")

            losses.append(loss_value)
            ema = loss_value if ema is None else 0.9 * ema + 0.1 * loss_value
            lrs = current_lrs(scheduler, optimizer)
            if log_csv is not None:
                log_csv.append(step, ema, lrs, loss_value)
            elapsed = time.perf_counter() - t0
            progress.set_description(f"Loss EMA * 1000: {ema * 1000:.4f}, Current LR: {lrs[-1]:.2e}", refresh=False)
            progress.update(1)
            control.emit("step", step=step, total=iterations, loss=loss_value, loss_ema=ema, lrs=lrs,
                         elapsed=elapsed, eta=elapsed / step * (iterations - step))

            if step in saves:
                _save(ctx, output, optimizer, step, started_at, suffix_steps=step)
                control.emit("saved", path=str(output.path(step)), step=step)
            if control.stop_requested and step < iterations:
                if control.save_on_stop:
                    path = _save(ctx, output, optimizer, step, started_at, suffix_steps=step)
                    status = "stopped_saved"
                else:
                    status = "stopped"
                break
    finally:
        progress.close()
        network.eval()
    report = None
    if status == "finished" and hasattr(mode, "quality_report"):
        report = mode.quality_report(ctx)
        if report is not None:
            output.extra_metadata.update(headline_metadata(report))
    if status == "finished" and output.save_final:
        path = _save(ctx, output, optimizer, step, started_at)
        if report is not None:
            write_report(report, path)
    message = {
        "finished": f"Successfully created {path}" if path else f"Finished {step} steps (not saved)",
        "stopped_saved": f"Stopped at step {step}. Successfully created {path}",
        "stopped": f"Stopped at step {step}",
    }[status]
    if report is not None:
        message += "\n" + report_summary(report)
    control.emit("done", status=status, path=str(path) if path else None, message=message, report=report)
    return Result(status, path, step, losses, message, report)


def headline_metadata(report: dict) -> dict[str, str]:
    import json

    return {"traintrain.quality": json.dumps(report.get("headline", {}))}


def report_path(lora_path: Path) -> Path:
    return Path(lora_path).with_suffix(".report.json")


def write_report(report: dict, lora_path: Path) -> Path:
    import json
    import os

    path = report_path(lora_path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def report_summary(report: dict) -> str:
    parts = [f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in report.get("headline", {}).items()]
    return "quality (held-out, noise-prediction space): " + ", ".join(parts)


def train_step(ctx: TrainContext, mode, index: int, optimizer, scheduler, scaler) -> float:
    """One optimizer step: the mode's prediction and target, weighted loss, backward, step, schedule."""
    s = ctx.settings
    with ctx.autocast():
        out = mode.step(ctx, index)
    per_sample = per_sample_loss(out.pred, out.target, s.train_loss_function, out.mask)
    weight = min_snr_weight(diffusion.snr(out.timesteps, ctx.alpha_bar), s.train_snr_gamma, ctx.is_v_prediction)
    loss = (per_sample * weight).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    loss_value = loss.item()  # sync point: once per step, for the log and the plateau schedule
    step_scheduler(scheduler, loss_value)
    optimizer.zero_grad(set_to_none=True)
    return loss_value


def _save(ctx: TrainContext, output: Output, optimizer, steps_done: int, started_at: float,
          suffix_steps: int | None = None) -> Path:
    """Save the network as it is now; schedule-free optimizers are switched to their averaged weights first."""
    s = ctx.settings
    schedule_free = is_schedule_free(optimizer)
    if schedule_free:
        optimizer.eval()
    try:
        path = output.path(suffix_steps)
        metadata = build_metadata(
            spec=ctx.network.spec, family=ctx.components.family, is_v_prediction=ctx.is_v_prediction,
            output_name=path.stem, settings={**s.raw, "train_seed": ctx.seed, "train_iterations": steps_done},
            resolution=output.resolution, model_name=output.model_name, tag_frequency=output.tag_frequency,
            started_at=started_at, mode=output.mode,
        )
        metadata.update(output.extra_metadata)
        names = ctx.names or names_from_components(ctx.components.family, ctx.components.unet,
                                                   ctx.components.text_encoders)
        ctx.names = names
        save_network(ctx.network, path, metadata=metadata, save_precision=s.save_precision,
                     strength=s.network_strength, overwrite=output.overwrite or suffix_steps is not None, names=names)
    finally:
        if schedule_free:
            optimizer.train()
    return path


def enable_gradient_checkpointing(unet, text_encoders) -> None:
    """Recompute activations in backward. Text encoders keep their weights frozen (upstream unfroze them)."""
    unet.enable_gradient_checkpointing()
    unet.train()
    for encoder in text_encoders:
        try:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        except TypeError:
            # transformers < 4.35 (the webui's 4.30.2) takes no kwargs and always checkpoints reentrantly: then
            # the embeddings' output must require grad, or no gradient reaches the LoRA inside the layers.
            encoder.gradient_checkpointing_enable()
            encoder.enable_input_require_grads()
        encoder.train()
        encoder.requires_grad_(False)


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, dynamic_ncols=True, mininterval=1.0)
