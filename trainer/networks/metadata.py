"""The metadata a saved LoRA carries: kohya's `ss_*` set, SAI ModelSpec, and the two addnet hashes.

The webui files a LoRA under SD1/SD2/SDXL from `ss_base_model_version` / `ss_v2`, names it from `ss_output_name`,
shows `ss_tag_frequency`, and uses `sshs_model_hash` as its hash; ComfyUI and diffusers ignore it all.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import time

import torch

from ..models.family import Family
from .types import network_type

ARCHITECTURE = {
    ("sd1", False): "stable-diffusion-v1/lora",
    ("sd1", True): "stable-diffusion-v1-v/lora",
    ("sd2", False): "stable-diffusion-v2-512/lora",
    ("sd2", True): "stable-diffusion-v2-768-v/lora",
    ("sdxl", False): "stable-diffusion-xl-v1-base/lora",
    ("sdxl", True): "stable-diffusion-xl-v1-base-v/lora",
}
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def network_args(spec) -> dict:
    """kohya's `ss_network_args`: what a loader needs to rebuild the network beyond dim/alpha."""
    args = {}
    kind = network_type(spec.network_type)
    if kind.kxk_rank:
        args["conv_dim"] = str(spec.conv_rank or spec.rank)
        args["conv_alpha"] = str(spec.conv_alpha or spec.alpha)
    args.update(kind.fixed_args)
    if spec.element != "Full":
        args["network_element"] = spec.element
    return args


def build_metadata(
    *,
    spec,
    family: Family,
    is_v_prediction: bool,
    output_name: str,
    settings: dict | None = None,
    resolution: tuple[int, int] | None = None,
    model_name: str = "",
    tag_frequency: dict | None = None,
    started_at: float | None = None,
    finished_at: float | None = None,
    session_id: int | None = None,
    mode: str = "LoRA",
    num_processes: int = 1,
) -> dict[str, str]:
    """All values are strings (safetensors metadata). `settings` uses upstream's setting names. `num_processes`:
    of a data-parallel run, whose batch per step is kohya's `ss_total_batch_size` = per-device batch × processes."""
    s = settings or {}
    height, width = resolution or (family.resolution, family.resolution)
    started_at = time.time() if started_at is None else started_at
    finished_at = time.time() if finished_at is None else finished_at
    lr = s.get("train_learning_rate", "")
    te_lr = s.get("train_textencoder_learning_rate") or lr
    meta = {
        "ss_session_id": session_id if session_id is not None else random.randint(0, 2**32),
        "ss_training_started_at": started_at,
        "ss_training_finished_at": finished_at,
        "ss_output_name": output_name,
        "ss_sd_model_name": model_name,
        "ss_base_model_version": family.model_version,
        "ss_v2": family.is_sd2,
        "ss_network_module": network_type(spec.network_type).ss_network_module,
        "ss_network_dim": spec.rank,
        "ss_network_alpha": float(spec.alpha),
        "ss_network_args": json.dumps(network_args(spec)),
        "ss_learning_rate": lr,
        "ss_unet_lr": lr,
        "ss_text_encoder_lr": te_lr,
        "ss_max_train_steps": s.get("train_iterations", ""),
        "ss_lr_warmup_steps": s.get("train_lr_warmup_steps", ""),
        "ss_lr_scheduler": s.get("train_lr_scheduler", ""),
        "ss_lr_step_rules": s.get("train_lr_step_rules", ""),
        "ss_lr_scheduler_num_cycles": s.get("train_lr_scheduler_num_cycles", ""),
        "ss_lr_scheduler_power": s.get("train_lr_scheduler_power", ""),
        "ss_optimizer": str(s.get("train_optimizer", "")).lower(),
        "ss_min_snr_gamma": s.get("train_snr_gamma", ""),
        "ss_mixed_precision": s.get("train_model_precision", ""),
        "ss_seed": s.get("train_seed", ""),
        "ss_batch_size_per_device": s.get("train_batch_size", ""),
        "ss_total_batch_size": _total_batch(s.get("train_batch_size", ""), num_processes),
        "ss_num_processes": num_processes,
        "ss_gradient_checkpointing": s.get("use_gradient_checkpointing", ""),
        "ss_loss_type": s.get("train_loss_function", ""),
        # kohya sd-scripts' names for the noise and caption options (beyond upstream; defaults are "off")
        "ss_noise_offset": s.get("noise_offset", 0),
        "ss_multires_noise_iterations": s.get("multires_noise_iterations", 0),
        "ss_multires_noise_discount": s.get("multires_noise_discount", 0.3),
        "ss_debiased_estimation": _flag(s.get("debiased_estimation_loss", False)),
        "ss_caption_dropout_rate": s.get("caption_dropout_rate", 0),
        "ss_shuffle_caption": _flag(s.get("shuffle_caption", False)),
        "ss_keep_tokens": s.get("keep_tokens", 0),
        "ss_resolution": f"({width}, {height})",
        "ss_tag_frequency": json.dumps({"1": tag_frequency} if tag_frequency else {}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[(family.name, bool(is_v_prediction))],
        "modelspec.implementation": SGM_IMPLEMENTATION if family.is_sdxl else "diffusers",
        "modelspec.title": output_name,
        "modelspec.date": datetime.datetime.fromtimestamp(finished_at).isoformat(timespec="seconds"),
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if is_v_prediction else "epsilon",
        "traintrain.mode": mode,
    }
    return {k: v if isinstance(v, str) else str(v) for k, v in meta.items()}


def _total_batch(per_device, num_processes: int):
    try:
        return int(per_device) * num_processes
    except (TypeError, ValueError):
        return ""


def _flag(value) -> bool:
    """A checkbox's raw value (True, or "true" from the CLI's --set) as kohya writes it: True / False. The same
    spellings settings.cast accepts; that module cannot be imported here (settings → modes → … → networks.io →
    metadata would be a cycle), and the metadata is built from the raw values."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def addnet_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya defines them, over the file with only `ss_*` metadata:
    sha256 of the tensor-data section (after the JSON header), and sha256 of 64 KiB at 1 MiB (8 hex digits).
    """
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header:]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash
