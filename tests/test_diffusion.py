"""engine/diffusion.py with hand-worked numbers: timesteps, x_t, v and SNR (DDPM, Ho et al. 2020; v: Salimans & Ho).

The worked example: ᾱ = 0.64, so √ᾱ = 0.8 and √(1 − ᾱ) = 0.6; with x₀ = 1 and ε = 2
    x_t = 0.8·1 + 0.6·2 = 2.0,   v = 0.8·2 − 0.6·1 = 1.0,   SNR = 0.64 / 0.36 = 16/9.
"""

from __future__ import annotations

import pytest
import torch

from trainer.engine.diffusion import add_noise, sample_timesteps, snr, velocity

U32 = 2.0 ** -24  # unit round-off of fp32: one correctly rounded operation errs by at most U32 relative


def fp32_tol(ops: int, magnitude: float) -> float:
    """Absolute error bound of a short fp32 formula: each of `ops` rounding steps (the input's own rounding to fp32
    counts as one) errs by ≤ U32 relative to the largest magnitude in play (|a| + |b| for a ± b)."""
    return ops * U32 * magnitude


def close(actual: torch.Tensor, expected, ops: int, magnitude: float):
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected, dtype=torch.float32), rtol=0,
                               atol=fp32_tol(ops, magnitude))


# ᾱ_t for t = 0, 1, 2: t = 1 is the worked example, t = 2 swaps the roles (√ᾱ = 0.6, √(1 − ᾱ) = 0.8).
ALPHA_BAR = torch.tensor([0.99, 0.64, 0.36])


def test_add_noise_worked_example():
    x0 = torch.ones(1, 1, 1, 1)
    eps = torch.full((1, 1, 1, 1), 2.0)
    # ops: ᾱ to fp32, 1 − ᾱ (exact by Sterbenz), 2 square roots, 2 products, 1 sum → 6; magnitude 0.8 + 1.2 = 2
    close(add_noise(x0, eps, torch.tensor([1]), ALPHA_BAR), [[[[2.0]]]], 6, 2.0)


def test_add_noise_indexes_alpha_bar_per_sample():
    x0 = torch.tensor([1.0, 1.0, 3.0]).view(3, 1, 1, 1).expand(3, 2, 2, 2)
    eps = torch.tensor([2.0, 2.0, -1.0]).view(3, 1, 1, 1).expand(3, 2, 2, 2)
    t = torch.tensor([1, 2, 0])
    out = add_noise(x0, eps, t, ALPHA_BAR)
    assert out.shape == (3, 2, 2, 2)
    # t=1: 0.8·1 + 0.6·2 = 2.0;  t=2: 0.6·1 + 0.8·2 = 2.2;  t=0: √0.99·3 − √0.01·1 = 2.98496… − 0.1
    expected = torch.tensor([2.0, 2.2, 0.99 ** 0.5 * 3 - 0.1]).view(3, 1, 1, 1).expand(3, 2, 2, 2)
    close(out, expected, 6, 3.1)


def test_add_noise_keeps_the_dtype_and_computes_in_fp32():
    x0 = torch.ones(1, 1, 1, 1, dtype=torch.float16)
    eps = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float16)
    out = add_noise(x0, eps, torch.tensor([1]), ALPHA_BAR)
    assert out.dtype == torch.float16
    assert out.item() == 2.0  # 2.0 is exact in fp16: the fp32 result (2.0 ± 6 ulp32) rounds to it


def test_velocity_worked_example_and_the_inverse():
    x0 = torch.ones(1, 1, 1, 1)
    eps = torch.full((1, 1, 1, 1), 2.0)
    t = torch.tensor([1])
    v = velocity(x0, eps, t, ALPHA_BAR)
    close(v, [[[[1.0]]]], 6, 1.6 + 0.6)  # 0.8·2 − 0.6·1
    # v is the other rotation of (x₀, ε): x₀ = √ᾱ·x_t − √(1−ᾱ)·v = 0.8·2 − 0.6·1, ε = √(1−ᾱ)·x_t + √ᾱ·v = 1.2 + 0.8
    x_t = add_noise(x0, eps, t, ALPHA_BAR)
    close(0.8 * x_t - 0.6 * v, [[[[1.0]]]], 12, 2.2)
    close(0.6 * x_t + 0.8 * v, [[[[2.0]]]], 12, 2.0)


def test_velocity_per_sample():
    x0 = torch.tensor([1.0, 1.0]).view(2, 1, 1, 1)
    eps = torch.tensor([2.0, 2.0]).view(2, 1, 1, 1)
    v = velocity(x0, eps, torch.tensor([1, 2]), ALPHA_BAR)
    close(v.flatten(), [1.0, 0.6 * 2 - 0.8 * 1], 6, 2.0)  # t=2: √ᾱ = 0.6, √(1−ᾱ) = 0.8 → 0.4


def test_snr_worked_example():
    out = snr(torch.tensor([1, 2, 0]), ALPHA_BAR)
    assert out.shape == (3,)
    # ᾱ's rounding to fp32 (≤ U32·ᾱ) is amplified by d/dᾱ (ᾱ/(1−ᾱ)) = 1/(1−ᾱ)²; then one division.
    for value, a in zip(out, (0.64, 0.36, 0.99)):
        expected = a / (1 - a)
        bound = U32 * a / (1 - a) ** 2 + U32 * expected
        assert abs(value.item() - expected) <= bound, (a, value.item(), expected)
    assert out[0].item() == pytest.approx(16 / 9, rel=4 * U32 / 0.36)


def test_sample_timesteps_range_is_half_open():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(4000, 3, 7, False, g)
    assert t.shape == (4000,) and t.dtype == torch.int64
    assert set(t.tolist()) == {3, 4, 5, 6}  # every value in [3, 7) appears; never 7, never below 3
    assert set(sample_timesteps(50, 5, 6, False, g).tolist()) == {5}


def test_sample_timesteps_fixed_in_batch_shares_one_value():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        t = sample_timesteps(8, 3, 7, True, g)
        assert t.shape == (8,)
        assert len(set(t.tolist())) == 1, t
        seen.add(t[0].item())
    assert seen == {3, 4, 5, 6}  # one value per batch, still drawn over the whole range
    free = sample_timesteps(64, 0, 1000, False, torch.Generator().manual_seed(0))
    assert len(set(free.tolist())) > 32  # without fixing, each sample draws its own


def test_sample_timesteps_follow_the_generator():
    a = sample_timesteps(16, 0, 1000, False, torch.Generator().manual_seed(5))
    b = sample_timesteps(16, 0, 1000, False, torch.Generator().manual_seed(5))
    c = sample_timesteps(16, 0, 1000, False, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_timesteps(4, 0, 10, False, torch.Generator(), device="cpu").device.type == "cpu"
