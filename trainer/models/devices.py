"""Where and in which dtype to compute. Device comes from the host (CUDA when present); never `cuda:0`."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
_warned_cpu_fp16 = False

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype(device: torch.device | str, requested: torch.dtype) -> torch.dtype:
    """The dtype we actually compute in: fp16 on CPU becomes fp32 (CPU fp16 matmuls are ~300× slower)."""
    global _warned_cpu_fp16
    if torch.device(device).type == "cpu" and requested == torch.float16:
        if not _warned_cpu_fp16:
            log.warning("fp16 was asked for on the CPU; computing in fp32 instead (CPU fp16 matmuls are unusably slow)")
            _warned_cpu_fp16 = True
        return torch.float32
    return requested
