"""A job from start to file: settings → components (from the host) → mode.prepare → network → engine → LoRA.

Everything that is checkable without loading a model (output name, existing files, data folder) is checked
first, so a bad input costs nothing and never leaves a partial file.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .engine.control import JobControl
from .engine.loop import Output, Result, TrainContext, run_engine, save_points
from .errors import UserError
from .fileio import write_json_atomic
from .jobs.logs import LossLog, csv_path
from .models.devices import PRECISIONS
from .modes import mode_class
from .networks.io import read_lora
from .networks.network import NetworkSpec, create_network, resume_network
from .paths import JSON_DIR
from .settings import Job

log = logging.getLogger(__name__)


def pick_seed(seed: int) -> int:
    return seed if seed >= 0 else random.SystemRandom().randint(0, 2**32 - 1)


def model_dtype(name: str) -> torch.dtype | None:
    return None if name == "model" else PRECISIONS[name]


def check_outputs(output: Output, iterations: int, every: int) -> None:
    if output.overwrite:
        return
    for path in [output.path()] + [output.path(n) for n in sorted(save_points(iterations, every))]:
        if path.exists():
            raise UserError(f"{path} already exists; tick save_overwrite or choose another save_lora_name")


def save_job_json(job: Job, when: datetime.datetime, json_dir: Path = JSON_DIR) -> Path:
    name = job.settings.save_lora_name or "untitled"
    path = Path(json_dir) / when.strftime("%Y%m%d") / f"{name}-{when.strftime('%Y%m%d_%H%M%S')}.json"
    return write_json_atomic(path, job.to_json())


def network_spec(s) -> NetworkSpec:
    return NetworkSpec(network_type=s.network_type, rank=s.network_rank, alpha=s.network_alpha,
                       conv_rank=s.network_conv_rank, conv_alpha=s.network_conv_alpha, element=s.network_element,
                       blocks=tuple(s.network_blocks))


def run_job(job: Job, host, control: JobControl | None = None, logs_dir: Path | None = None,
            json_dir: Path | None = None) -> Result:
    control = control or JobControl()
    s = job.settings
    mode = mode_class(job.mode)(job)
    mode.check_inputs()
    output = Output(directory=Path(host.lora_dir), name=s.save_lora_name, overwrite=s.save_overwrite,
                    mode=job.mode, model_name=Path(job.model).stem if job.model else "demo")
    output.path()  # validates the name before anything is loaded
    check_outputs(output, s.train_iterations, s.save_per_steps)
    if s.network_resume and not Path(s.network_resume).is_file():
        raise UserError(f"network_resume: {s.network_resume} is not a file")
    started = datetime.datetime.now()
    if s.save_as_json:
        log.info("settings saved to %s", save_job_json(job, started, json_dir or JSON_DIR))

    seed = pick_seed(s.train_seed)
    torch.manual_seed(seed)
    control.emit("phase", text="loading the model…")
    components = host.load_components(job.model, model_dtype(s.train_model_precision),
                                      PRECISIONS[s.train_VAE_precision], True if s.model_v_pred else None, job.vae)
    log.info("%s", components.summary())
    device = torch.device(host.device)
    ctx = TrainContext(
        components=components, settings=s, device=device, model_dtype=components.dtype,
        lora_dtype=PRECISIONS[s.train_lora_precision], seed=seed, generator=torch.Generator(device).manual_seed(seed),
        rng=random.Random(seed),
        alpha_bar=components.noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32),
    )
    control.emit("phase", text="caching the training data…")
    mode.prepare(ctx)
    components.unet.to(device)
    for encoder in components.text_encoders:
        encoder.to(device)
    output.tag_frequency = getattr(mode, "tag_frequency", None)
    output.resolution = getattr(mode, "resolution", None)
    logs = PassLogs(s.logging_save_csv, started, logs_dir)
    if hasattr(mode, "train"):  # modes with more than one pass (Difference) drive train_pass themselves
        return mode.train(ctx, output, control, logs)
    return train_pass(ctx, mode, output, control, logs, resume=getattr(mode, "resume", s.network_resume))


@dataclass
class PassLogs:
    """CSV logs per pass (`<name>-<time>.csv`, Difference's copier `<name>_copy-<time>.csv`)."""

    enabled: bool
    started: datetime.datetime
    logs_dir: Path | None = None

    def open(self, ctx, suffix: str = ""):
        if not self.enabled:
            return None
        s = ctx.settings
        header = {**s.raw, "model_version": ctx.components.family.model_version}
        kwargs = {"logs_dir": self.logs_dir} if self.logs_dir else {}
        path = csv_path(s.save_lora_name or "untitled", self.started, suffix=suffix, **kwargs)
        return LossLog(path, header, len(ctx.network.param_groups(1.0)))


def attach_network(ctx, resume: str = "", blocks=None):
    """A new network for ctx.settings, or one resumed from a file; attached (after any already attached)."""
    c, s = ctx.components, ctx.settings
    if resume:
        tensors, _ = read_lora(resume)
        return resume_network(c.family, c.unet, c.text_encoders, tensors, resume, dtype=ctx.lora_dtype,
                              device=ctx.device)
    spec = network_spec(s)
    if blocks is not None:
        spec = NetworkSpec(**{**spec.__dict__, "blocks": tuple(blocks)})
    return create_network(c.family, c.unet, c.text_encoders, spec, dtype=ctx.lora_dtype, device=ctx.device)


def train_pass(ctx, mode, output: Output, control: JobControl, logs: PassLogs, resume: str = "",
               keep_attached: bool = False) -> Result:
    """One network, one engine run. The network is detached afterwards unless the caller keeps it."""
    ctx.network = attach_network(ctx, resume, getattr(mode, "network_blocks", None))
    if ctx.settings.logging_verbose:
        for adapter in ctx.network.adapters:
            log.info("  %s (rank %d)", adapter.lora_name, adapter.rank)
    try:
        return run_engine(ctx, mode, output, control, started_at=time.time(),
                          log_csv=logs.open(ctx, output.suffix))
    finally:
        if not keep_attached:
            ctx.network.detach()
