"""Issue 16 item 4: kohya sd-scripts' noise and loss options — noise offset, multi-resolution (pyramid) noise,
debiased-estimation weighting, caption dropout, tag shuffling with keep_tokens — each on hand-worked small tensors,
each recorded in the file's `ss_*` metadata under kohya's name, and all off by default (upstream's streams)."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from support import spy
from trainer.data.captions import shuffle_tags, step_caption
from trainer.engine import diffusion
from trainer.engine.distributed import SINGLE
from trainer.engine.loss import debiased_weight
from trainer.engine.noise import offset_noise, pyramid_noise, training_noise
from trainer.networks.blocks import BASE, BLOCK_IDS
from trainer.networks.io import read_lora
from trainer.runner import run_job
from trainer.settings import validate

OFF = validate({}, "LoRA")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- noise offset --------------------------------------------------------------------------------------------------
def test_noise_offset_adds_one_constant_per_sample_and_channel():
    noise = torch.zeros(2, 3, 4, 4)
    out = offset_noise(noise, 0.1, gen(5))
    n = torch.randn(2, 3, 1, 1, generator=gen(5))  # the one draw it makes, (B, C, 1, 1)
    assert torch.equal(out, (0.1 * n).expand(2, 3, 4, 4))
    # on real noise it is ε + offset · n, nothing else
    eps = torch.arange(32.0).reshape(1, 2, 4, 4)
    n = torch.randn(1, 2, 1, 1, generator=gen(1))
    assert torch.equal(offset_noise(eps, 0.5, gen(1)), eps + 0.5 * n)


# -- pyramid noise -------------------------------------------------------------------------------------------------
def test_pyramid_noise_by_hand_two_levels():
    """4×4, two levels, discount ½: the draws are r₀, n₀ (4×4), r₁, n₁ ((4/r₁)×(4/r₁), 1 or 2 pixels), in that
    order from the generator; the result is (ε + n₀ + ½·up(n₁)) / std."""
    eps = torch.zeros(1, 1, 4, 4)
    g = gen(3)
    torch.rand((), generator=g)  # r₀: level 0 is full size whatever it is
    n0 = torch.randn(1, 1, 4, 4, generator=g)
    r1 = 2 + 2 * float(torch.rand((), generator=g))
    side = max(1, int(4 / r1))
    n1 = torch.randn(1, 1, side, side, generator=g)
    expected = n0 + 0.5 * F.interpolate(n1, size=(4, 4), mode="bilinear")
    expected = expected / expected.std()
    out = pyramid_noise(eps, 2, 0.5, gen(3))
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.std().item() == pytest.approx(1.0, abs=1e-6)


def test_pyramid_noise_stops_at_one_pixel_and_a_constant_level_is_broadcast():
    """2×2 image: level 1 is at most 1 pixel (2 / r < 2 for r ≥ 2... ≥ 1), so a later level is never drawn: ten
    iterations consume exactly the draws of two levels."""
    eps = torch.zeros(1, 1, 2, 2)
    g = gen(4)
    out = pyramid_noise(eps, 10, 0.3, g)
    after = torch.rand((), generator=g)  # the generator's next number after what the pyramid drew
    g2 = gen(4)
    torch.rand((), generator=g2)
    n0 = torch.randn(1, 1, 2, 2, generator=g2)
    torch.rand((), generator=g2)
    n1 = torch.randn(1, 1, 1, 1, generator=g2)
    assert torch.rand((), generator=g2) == after
    expected = n0 + 0.3 * n1.expand(1, 1, 2, 2)  # a 1×1 level upsampled is a constant
    assert torch.allclose(out, expected / expected.std(), atol=1e-6)


def test_training_noise_off_is_one_plain_draw_and_on_applies_offset_then_pyramid():
    like = torch.zeros(2, 4, 8, 8)
    assert torch.equal(training_noise(like, OFF, gen(9)), torch.randn(2, 4, 8, 8, generator=gen(9)))
    on = validate({"noise_offset": "0.1", "multires_noise_iterations": "3", "multires_noise_discount": "0.4"})
    g = gen(9)
    expected = pyramid_noise(offset_noise(torch.randn(2, 4, 8, 8, generator=g), 0.1, g), 3, 0.4, g)
    assert torch.equal(training_noise(like, on, gen(9)), expected)


# -- debiased estimation -------------------------------------------------------------------------------------------
def test_debiased_weight_by_hand():
    snr = torch.tensor([1.0, 4.0, 0.25, 5000.0])
    # ε: 1/√SNR with SNR clamped at 1000
    assert debiased_weight(snr, False).tolist() == pytest.approx([1.0, 0.5, 2.0, 1 / math.sqrt(1000)])
    # v: 1/(SNR + 1)
    assert debiased_weight(snr, True).tolist() == pytest.approx([0.5, 0.2, 0.8, 1 / 1001])


def test_debiased_weight_reaches_the_loss(lora_job, monkeypatch):
    """Each step's loss is mean(per-sample loss · w), w = 1/√SNR worked here in float64 from the run's own ᾱ_t
    (γ off, so min-SNR gives 1)."""
    import trainer.engine.loss

    snr_in = spy(monkeypatch, diffusion, "snr")
    losses_in = spy(monkeypatch, trainer.engine.loss, "per_sample_loss")
    job, host = lora_job(train_iterations="3", debiased_estimation_loss="true", train_snr_gamma="0",
                         train_batch_size="2")
    result = run_job(job, host)
    assert len(snr_in) == len(losses_in) == 3
    for loss, (snr_args, _, _), (_, _, per_sample) in zip(result.losses, snr_in, losses_in):
        a = snr_args[1][snr_args[0]].double()
        w = 1 / (a / (1 - a)).clamp(max=1000).sqrt()
        expected = (per_sample.double() * w).mean().item()
        assert loss == pytest.approx(expected, rel=1e-5, abs=0)
        assert abs(loss - per_sample.double().mean().item()) > 1e-3 * expected  # unweighted is far outside it
    assert read_lora(result.path)[1]["ss_debiased_estimation"] == "True"


# -- captions ------------------------------------------------------------------------------------------------------
def test_shuffle_keeps_the_first_tags_and_every_tag():
    caption = "trigger, red, circle ,blue,  square"
    out = shuffle_tags(caption, 1, random.Random(0))
    tags = out.split(", ")
    assert tags[0] == "trigger" and sorted(tags) == sorted(["trigger", "red", "circle", "blue", "square"])
    rest = ["red", "circle", "blue", "square"]
    random.Random(0).shuffle(rest)  # the one shuffle it makes, of the tags after keep_tokens
    assert tags[1:] == rest
    assert shuffle_tags(caption, 5, random.Random(0)) == "trigger, red, circle, blue, square"


def test_caption_dropout_and_shuffle_per_step():
    s = SimpleNamespace(caption_dropout_rate=0.0, shuffle_caption=False, keep_tokens=0)
    rng = random.Random(1)
    state = rng.getstate()
    assert step_caption("a, b", s, rng) == "a, b" and rng.getstate() == state  # off: draws nothing
    assert step_caption("a, b", SimpleNamespace(caption_dropout_rate=1.0, shuffle_caption=True, keep_tokens=0),
                        rng) == ""
    half = SimpleNamespace(caption_dropout_rate=0.5, shuffle_caption=False, keep_tokens=0)
    rng, check = random.Random(2), random.Random(2)
    out = [step_caption("a", half, rng) for _ in range(20)]
    assert out == ["" if check.random() < 0.5 else "a" for _ in range(20)] and 0 < out.count("") < 20


def test_dropped_captions_train_on_the_empty_conditioning():
    """Cached conditionings: a dropped row is the encoding of "" (pooled too), the others stay their caption's."""
    from trainer.modes.lora import Bucket, LoRAMode

    unet_only = [b for b in BLOCK_IDS if b != BASE]  # conditionings are cached when the text encoder is not trained
    job = SimpleNamespace(settings=validate({"caption_dropout_rate": "0.5",
                                             "network_blocks(BASE = TextEncoder)": unet_only}, "LoRA"))
    mode = LoRAMode(job)
    mode.empty = (torch.full((1, 3, 2), -1.0), torch.full((1, 2), -2.0))
    bucket = Bucket((64, 64), torch.zeros(4, 4, 8, 8), ["a", "b", "c", ""], torch.arange(4.0)[:, None, None].expand(
        4, 3, 2), torch.ones(4, 2), None, [0, 1, 2, 3])
    ctx = SimpleNamespace(settings=job.settings, rng=random.Random(0), world=SINGLE)
    hidden, pooled = mode._conditionings(ctx, bucket, [0, 1, 2, 3])
    check = random.Random(0)
    dropped = [check.random() < 0.5 for _ in range(4)]
    for row in range(3):
        assert torch.equal(hidden[row], torch.full((3, 2), -1.0) if dropped[row] else torch.full((3, 2), float(row)))
        assert torch.equal(pooled[row], torch.full((2,), -2.0) if dropped[row] else torch.ones(2))
    assert any(dropped[:3]) and not all(dropped[:3])
    assert torch.equal(bucket.hidden[0], torch.zeros(3, 2))  # the cache itself is untouched


# -- metadata and a run ----------------------------------------------------------------------------------------------
def test_options_train_and_are_named_in_the_metadata_the_kohya_way(lora_job):
    job, host = lora_job(train_iterations="2", noise_offset="0.05", multires_noise_iterations="4",
                         multires_noise_discount="0.25", caption_dropout_rate="0.3", shuffle_caption="true",
                         keep_tokens="1")
    meta = read_lora(run_job(job, host).path)[1]
    assert {k: meta[k] for k in ("ss_noise_offset", "ss_multires_noise_iterations", "ss_multires_noise_discount",
                                 "ss_caption_dropout_rate", "ss_shuffle_caption", "ss_keep_tokens",
                                 "ss_debiased_estimation")} == {
        "ss_noise_offset": "0.05", "ss_multires_noise_iterations": "4", "ss_multires_noise_discount": "0.25",
        "ss_caption_dropout_rate": "0.3", "ss_shuffle_caption": "True", "ss_keep_tokens": "1",
        "ss_debiased_estimation": "False"}


def test_defaults_are_off_and_say_so():
    s = validate({}, "LoRA")
    assert (s.noise_offset, s.multires_noise_iterations, s.debiased_estimation_loss, s.caption_dropout_rate,
            s.shuffle_caption, s.keep_tokens) == (0, 0, False, 0, False, 0)
    with pytest.raises(Exception, match="caption_dropout_rate: 1.5 is a chance"):
        validate({"caption_dropout_rate": "1.5"})
