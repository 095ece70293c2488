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
