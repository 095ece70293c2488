"""The engine's memory estimate: weights counted exactly from the header, activations by the calibrated rule."""

import pytest

from trainer.engine.memory import estimate, parameter_counts
from trainer.settings import validate


def test_estimate_counts_weights_and_scales_with_pixels(demo_models):
    counts = parameter_counts(demo_models["sd1"])
    assert counts["unet"] > 0 and counts["text"] > 0 and counts["vae"] > 0 and counts["model_channels"] == 32
    small = estimate(counts, validate({"image_size(height, width)": "256"}))
    large = estimate(counts, validate({"image_size(height, width)": "512"}))
    assert large["activations_gib"] == pytest.approx(4 * small["activations_gib"])
    ckpt = estimate(counts, validate({"image_size(height, width)": "512", "use_gradient_checkpointing": True}))
    assert ckpt["activations_gib"] < large["activations_gib"]
    no_base = estimate(counts, validate({"network_blocks(BASE = TextEncoder)": ["IN01"]}))
    assert no_base["weights_gib"] < small["weights_gib"]  # a frozen text encoder is not kept for training
    assert large["total_gib"] >= large["weights_gib"] + large["activations_gib"]


def test_weights_already_in_memory_are_not_counted_again(demo_models):
    """Inside the webui a job trains on the webui's loaded model: its weights are not a second copy."""
    counts = parameter_counts(demo_models["sd1"])
    settings = validate({"image_size(height, width)": "512"})
    loaded = estimate(counts, settings)
    resident = estimate(counts, settings, resident=True)
    assert resident["loading_gib"] == 0
    assert resident["total_gib"] == pytest.approx(loaded["total_gib"] - loaded["weights_gib"])
