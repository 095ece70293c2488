"""The one training loop. A mode supplies `step()` (prediction, target, timesteps, mask); the engine owns the rest:
loss with the mask and min-SNR weighting, loss scaling, backward, optimizer and schedule, exactly
`train_iterations` steps, periodic saves, Stop / Stop-and-Save, the CSV log and progress events. The final save,
the quality report and the job's message belong to the runner.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import UserError
from ..networks.io import NonFiniteTensors
from . import diffusion
from .control import Event, JobControl, Status
from .distributed import StepModule
from .loss import debiased_weight, min_snr_weight, per_sample_loss
from .optim import build_optimizer, build_scheduler, current_lrs, step_scheduler
from .saving import last_good_file, save_lora
from .types import Output, StepOutput, TrainContext, Trained, save_points


def run_engine(ctx: TrainContext, mode, output: Output, control: JobControl, started_at: float | None = None,
               log_csv=None, hooks=(), states=None) -> Trained:
    """Train ctx.network for ctx.settings.train_iterations steps of `mode.step` (fewer if stopped). After each step
    every hook's `after_step` runs (previews, the evaluation loss); its time is not counted in the step time.
    `states` (engine/state.py): the training state this pass continues after its step, and those it saves."""
    s = ctx.settings
    network = ctx.network
    iterations = s.train_iterations
    groups = network.param_groups(s.train_learning_rate, s.train_textencoder_learning_rate)
    if not groups:
        raise UserError("no layers to train: the selected network_blocks contain no modules for this network "
                        "type (select more blocks, or BASE)")
    optimizer = build_optimizer(s.train_optimizer, groups, network, s.train_learning_rate, s.train_optimizer_settings)
    scheduler = build_scheduler(s.train_lr_scheduler, optimizer, iterations, s, s.train_lr_scheduler_settings)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.needs_loss_scaling)
    if s.use_gradient_checkpointing:
        enable_gradient_checkpointing(ctx.components.unet,
                                      ctx.components.text_encoders if mode.trains_text_encoder else [])
    network.train()
    world = ctx.world
    forward = world.wrap(StepModule(network, mode, ctx)) if world.size > 1 else None  # DDP: gradients all-reduced

    started_at = started_at or time.time()
    saves = save_points(iterations, s.save_per_steps)
    start, ema, losses = states.restore(ctx, mode, optimizer, scheduler, scaler, log_csv) if states else (0, None, [])
    for hook in hooks:
        hook.start(ctx, start)
    t0 = time.perf_counter()
    outside = 0.0  # seconds spent in hooks, left out of the step time and the ETA
    progress = _progress_bar(iterations, start, shown=world.is_main)
    step = start
    status, stop_path, saved_at = Status.FINISHED, None, None
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def diverged(what: str) -> UserError:
        return UserError(f"training diverged at step {step} ({what}); {last_good_file(output, s, step)}; "
                         f"lower train_learning_rate or use fp32/bf16 precision")

    def save(suffix_steps: int):
        if not world.is_main:
            return None  # rank 0 writes every file of a data-parallel run
        try:
            path = save_lora(ctx, output, optimizer, step, started_at, suffix_steps=suffix_steps)
        except NonFiniteTensors as err:
            raise UserError(f"{err} (step {step}; {last_good_file(output, s, step)})") from None
        if states is not None and states.save:
            states.write(path, ctx, mode, optimizer, scheduler, scaler, step, ema, losses, log_csv)
        return path

    try:
        for step in range(start + 1, iterations + 1):
            lrs = current_lrs(scheduler, optimizer)  # the rates this step trains at (read before it steps them)
            loss_value, weights_finite, stopping = train_step(ctx, mode, step - 1, optimizer, scheduler, scaler,
                                                              params, forward, control.stop_requested)
            if not math.isfinite(loss_value):
                raise diverged(f"the loss became {loss_value}")
            if not weights_finite:
                raise diverged("non-finite weights")

            losses.append(loss_value)
            ema = loss_value if ema is None else 0.9 * ema + 0.1 * loss_value
            elapsed = time.perf_counter() - t0 - outside
            extra = {}
            for hook in hooks:
                extra.update(hook.after_step(ctx, step))
            outside = time.perf_counter() - t0 - elapsed
            if log_csv is not None:
                log_csv.append(step, ema, lrs, loss_value, **extra)
            progress.set_description(f"Loss EMA * 1000: {ema * 1000:.4f}, Current LR: {lrs[-1]:.2e}", refresh=False)
            progress.update(1)
            control.emit(Event.STEP, step=step, total=iterations, loss=loss_value, loss_ema=ema, lrs=lrs,
                         elapsed=elapsed, eta=elapsed / (step - start) * (iterations - step), **extra)

            if step in saves:
                path = saved_at = save(step)
                if path is not None:
                    control.emit(Event.SAVED, path=str(path), step=step)
            if world.size == 1:
                stopping = control.stop_requested  # also a stop asked for during this step
            if stopping and step < iterations:
                if control.save_on_stop:
                    stop_path = saved_at if step in saves else save(step)  # the periodic file of this step is it
                    status = Status.STOPPED_SAVED
                else:
                    status = Status.STOPPED
                break
    finally:
        progress.close()
        network.eval()
    return Trained(status, step, losses, optimizer, stop_path)


def train_step(ctx: TrainContext, mode, index: int, optimizer, scheduler, scaler, params=None, forward=None,
               stop: bool = False) -> tuple[float, bool, bool]:
    """One optimizer step: the mode's prediction and target, weighted loss, backward, step, schedule.
    `forward`: the DDP-wrapped step of a data-parallel run (engine/distributed.py), else the mode's own.
    Returns the loss (the mean over the processes), whether every weight in `params` is finite after the step, and
    whether any process asked to `stop` — read in one device→host sync."""
    s = ctx.settings
    with ctx.autocast():
        out = mode.step(ctx, index) if forward is None else StepOutput(*forward(index))
    per_sample = per_sample_loss(out.pred, out.target, s.train_loss_function, out.mask)
    snr = diffusion.snr(out.timesteps, ctx.alpha_bar)
    weight = min_snr_weight(snr, s.train_snr_gamma, ctx.is_v_prediction)
    if s.debiased_estimation_loss:
        weight = weight * debiased_weight(snr, ctx.is_v_prediction)
    loss = (per_sample * weight).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    # the sync point, once per step: the loss (the log, the plateau schedule) and the largest |weight| — NaN or inf
    # when any weight is (a max-abs norm neither overflows nor hides a NaN)
    mean_loss, stopping = ctx.world.combine(loss, stop)
    health = [mean_loss, stopping]
    if params:
        health.append(torch.stack(torch._foreach_norm(params, math.inf)).float().amax().reshape(1))
    values = torch.cat(health).tolist()
    loss_value, weights_finite = values[0], all(math.isfinite(v) for v in values[2:])
    step_scheduler(scheduler, loss_value)
    optimizer.zero_grad(set_to_none=True)
    return loss_value, weights_finite, values[1] > 0


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


def _progress_bar(total: int, done: int = 0, shown: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, dynamic_ncols=True, mininterval=1.0, disable=not shown)
