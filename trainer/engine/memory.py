"""How much memory a run will need, before it starts: the UI shows it beside Start.

Weights are counted exactly from the checkpoint's header (no tensor is read); activations follow a per-latent-
pixel rule calibrated on the SD1.5 architecture (bench/memory.py measures both sides):

    weights   = UNet (+ text encoders when BASE trains) in the model dtype
    loading   = UNet + text encoders + VAE, all alive while latents are cached
    adapters  = LoRA parameters × (weight + gradient + two Adam moments) in the LoRA dtype
    activations = batch · (H/8)·(W/8) · model_channels · ACTIVATION_FACTOR · bytes, ÷ CHECKPOINT_GAIN with
                  gradient checkpointing
"""

from __future__ import annotations

from ..models.checkpoint import open_state_dict
from ..models.devices import PRECISIONS, compute_dtype
from ..networks.blocks import BASE
from ..networks.types import network_type

ACTIVATION_FACTOR = 560.0  # calibrated: SD1.5, fp32, CPU, 512², batch 1 (bench/memory.py: 6.60 GiB peak)
CHECKPOINT_GAIN = 1.7  # measured 5.46 GiB with gradient checkpointing
RUNTIME_OVERHEAD_GIB = 0.6  # interpreter, torch, transformers, diffusers (measured: 4.64 GiB loading peak)


def _bytes(dtype) -> int:
    return {2: 2, 4: 4}.get(dtype.itemsize, dtype.itemsize)


def parameter_counts(sd) -> dict[str, int]:
    """Parameters per part from a checkpoint's keys and shapes (a models.checkpoint.StateDict, or a file path)."""
    if not hasattr(sd, "shape"):
        with open_state_dict(sd) as opened:
            return parameter_counts(opened)
    counts = {"unet": 0, "text": 0, "vae": 0}
    for key in sd:
        n = 1
        for d in sd.shape(key):
            n *= d
        if key.startswith("model.diffusion_model."):
            counts["unet"] += n
        elif key.startswith("first_stage_model."):
            counts["vae"] += n
        elif key.startswith(("cond_stage_model.", "conditioner.")):
            counts["text"] += n
    counts["model_channels"] = sd.shape("model.diffusion_model.input_blocks.0.0.weight")[0]
    return counts


def estimate(counts: dict[str, int], settings, device="cpu", resident: bool = False) -> dict[str, float]:
    """GiB per part and in total for `settings` (image_size, batch, precisions, checkpointing, network);
    `resident`: the model's weights are in memory already and are trained on as they are (not counted)."""
    gib = 2**30
    model = compute_dtype(device, PRECISIONS.get(settings.train_model_precision, PRECISIONS["fp32"]))
    lora = PRECISIONS[settings.train_lora_precision]
    text = counts["text"] if BASE in settings.network_blocks else 0
    weights = (counts["unet"] + text) * _bytes(model)
    loading = (counts["unet"] + counts["text"]) * _bytes(model) + counts["vae"] * 4
    rank_scale = settings.network_rank / 16
    adapters = counts["unet"] * network_type(settings.network_type).memory_fraction * rank_scale * 4 * _bytes(lora)
    height, width = settings.image_size
    activations = (settings.train_batch_size * (height // 8) * (width // 8) * counts["model_channels"]
                   * ACTIVATION_FACTOR * _bytes(model))
    if settings.use_gradient_checkpointing:
        activations /= CHECKPOINT_GAIN
    training = (0 if resident else weights) + adapters + activations
    if resident:  # trains on weights already in memory (the webui's): nothing is loaded
        loading = 0
    return {
        "weights_gib": weights / gib, "adapters_gib": adapters / gib, "activations_gib": activations / gib,
        "loading_gib": loading / gib, "total_gib": max(training, loading) / gib + RUNTIME_OVERHEAD_GIB,
    }
