"""Checks that need no model, run by the runner before anything loads, each refusing in one line that names the
setting: the output folder, the optimizer and schedule settings, a resume file's model family, and the memory the
job needs against what the device has (from the checkpoint's header and engine/memory.py's estimate)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from .errors import UserError

log = logging.getLogger(__name__)
MIN_FREE_BYTES = 256 * 2**20  # a LoRA file, its temporary copy, the CSV and the report fit in this


def check_output_dir(directory: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """The LoRA folder: a folder (or creatable), writable, with room for the files."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise UserError(f"the LoRA folder {directory}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"the LoRA folder {existing} is not writable; choose another output folder")
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise UserError(f"the LoRA folder {existing} has only {free / 2**20:.0f} MiB free; "
                        f"at least {min_free / 2**20:.0f} MiB are needed")


def check_optimizer(settings) -> None:
    """Build the chosen optimizer and schedule on one stand-in parameter, so a wrong argument in
    train_optimizer_settings / train_lr_scheduler_settings (or a missing package) is found before loading."""
    from .engine.optim import build_optimizer, build_scheduler

    s = settings
    stand_in = torch.nn.Linear(2, 2, bias=False)
    groups = [{"params": list(stand_in.parameters()), "lr": s.train_learning_rate}]
    optimizer = build_optimizer(s.train_optimizer, groups, stand_in, s.train_learning_rate,
                                s.train_optimizer_settings)
    build_scheduler(s.train_lr_scheduler, optimizer, s.train_iterations, s, s.train_lr_scheduler_settings)


def check_resume_family(resume: str, model) -> None:
    """A LoRA to continue must be for the checkpoint's family (SD1 / SD2 / SDXL). `model`: the host's peek."""
    from .models.family import detect_family
    from .networks.io import family_of_lora, read_lora

    if not resume or model is None:  # nothing cheap to compare with: loading checks it
        return
    tensors, metadata = read_lora(resume)
    theirs = family_of_lora(tensors, metadata)
    ours = detect_family(model.keys(), model.shape, model.path)
    if theirs is not None and theirs.name != ours.name:
        raise UserError(f"network_resume: {Path(resume).name} is a {theirs.title} LoRA, but the model is "
                        f"{ours.title}; choose a LoRA made for this model")


def available_memory(device: torch.device) -> int | None:
    """Bytes the job may still use on `device`: free GPU memory, or the system's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(settings, model, device: torch.device, resident: bool = False, freed: int = 0) -> None:
    """Refuse a job whose estimated peak does not fit the device. `model`: the host's peek (keys and shapes only);
    `resident`: the job trains on weights already in memory (the webui's); `freed`: bytes the host frees before
    loading (the webui's other model)."""
    from .engine.memory import estimate, parameter_counts

    if model is None:
        return
    try:
        need = estimate(parameter_counts(model), settings, str(device), resident)["total_gib"]
    except (OSError, ValueError, KeyError) as err:  # loading reports a bad file in its own words
        log.info("no memory estimate: %s", err)
        return
    have = available_memory(device)
    if have is not None:
        have += freed
    if have is not None and need * 2**30 > have:
        where = "GPU memory" if device.type == "cuda" else "memory"
        raise UserError(f"this job needs about {need:.1f} GiB of {where} (estimate) but {have / 2**30:.1f} GiB is "
                        f"available; lower train_batch_size, image_size or network_rank, or tick "
                        f"use_gradient_checkpointing")
