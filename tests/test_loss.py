"""engine/loss.py with hand-worked numbers: per-sample MSE / L1 / Smooth-L1 (with and without a mask) and the
min-SNR-γ weight (Hang et al., 2023) in its ε and v forms.

The element differences below are dyadic (0.5, 1, 2, −3), so every sum and mean of them is exact in fp32 and
the results are compared exactly.
"""

from __future__ import annotations

import pytest
import torch

from trainer.engine.loss import LOSSES, min_snr_weight, per_sample_loss

U32 = 2.0 ** -24  # fp32 unit round-off


def _pair():
    """(B=2, C=2, h=1, w=2). Sample 0: differences [[0.5, 1], [2, −3]] (channel 0, channel 1); sample 1: all 1."""
    target = torch.zeros(2, 2, 1, 2)
    pred = torch.tensor([[[[0.5, 1.0]], [[2.0, -3.0]]],
                         [[[1.0, 1.0]], [[1.0, 1.0]]]])
    return pred, target


# sample 0 by hand — squares 0.25, 1, 4, 9; absolutes 0.5, 1, 2, 3; Smooth-L1 (β = 1: ½x² if |x| < 1 else |x| − ½)
# 0.125, 0.5, 1.5, 2.5. Sample 1: every element gives 1 (MSE, L1) or 0.5 (Smooth-L1).
UNMASKED = {
    "MSE": [(0.25 + 1 + 4 + 9) / 4, 1.0],  # 3.5625
    "L1": [(0.5 + 1 + 2 + 3) / 4, 1.0],  # 1.625
    "Smooth-L1": [(0.125 + 0.5 + 1.5 + 2.5) / 4, 0.5],  # 1.15625
}
# mask (B, 1, h, w) = sample 0: [[1, 0]] (the first pixel, both channels: differences 0.5 and 2); sample 1: none.
MASKED = {
    "MSE": [(0.25 + 4) / 2, 0.0],  # 2.125
    "L1": [(0.5 + 2) / 2, 0.0],  # 1.25
    "Smooth-L1": [(0.125 + 1.5) / 2, 0.0],  # 0.8125
}


@pytest.mark.parametrize("kind", LOSSES)
def test_per_sample_loss_by_hand(kind):
    pred, target = _pair()
    out = per_sample_loss(pred, target, kind)
    assert out.shape == (2,) and out.dtype == torch.float32
    assert out.tolist() == UNMASKED[kind]


@pytest.mark.parametrize("kind", LOSSES)
def test_per_sample_loss_with_a_mask_by_hand(kind):
    pred, target = _pair()
    mask = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    out = per_sample_loss(pred, target, kind, mask)
    # the mean is over the masked elements only; an empty mask gives 0, not NaN
    assert out.tolist() == MASKED[kind]
    assert out.tolist() != UNMASKED[kind]


def test_a_full_mask_is_no_mask_and_the_mask_is_broadcast_over_channels():
    pred, target = _pair()
    ones = torch.ones(2, 1, 1, 2)
    for kind in LOSSES:
        assert per_sample_loss(pred, target, kind, ones).tolist() == UNMASKED[kind]
    # a mask selecting the second pixel: sample 0 differences 1 and −3 → MSE (1 + 9)/2 = 5
    second = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 1.0]]]])
    assert per_sample_loss(pred, target, "MSE", second).tolist() == [5.0, 1.0]


def test_per_sample_loss_is_computed_in_fp32():
    # 300² = 90000 overflows fp16 (max 65504); the loss of fp16 inputs is taken in fp32
    pred = torch.full((1, 1, 2, 2), 300.0, dtype=torch.float16)
    target = torch.zeros(1, 1, 2, 2, dtype=torch.float16)
    out = per_sample_loss(pred, target, "MSE")
    assert out.dtype == torch.float32 and out.tolist() == [90000.0]


def test_unknown_loss_is_refused():
    pred, target = _pair()
    with pytest.raises(ValueError, match="unknown loss 'Huber'"):
        per_sample_loss(pred, target, "Huber")


# -- min-SNR-γ -------------------------------------------------------------------------------------------------
# SNR 0.25, 4, 16 with γ = 5. ε form min(SNR, γ)/SNR: 1, 1, 5/16. v form min(SNR, γ)/(SNR + 1): 0.25/1.25 = 0.2,
# 4/5 = 0.8, 5/17. (Below γ the v weight is SNR/(SNR + 1) = ᾱ.) One fp32 division each: ≤ U32 relative.
SNR = torch.tensor([0.25, 4.0, 16.0])


def test_min_snr_weight_epsilon_form():
    torch.testing.assert_close(min_snr_weight(SNR, 5.0, False), torch.tensor([1.0, 1.0, 5 / 16]), rtol=U32, atol=0)


def test_min_snr_weight_v_form():
    w = min_snr_weight(SNR, 5.0, True)
    torch.testing.assert_close(w, torch.tensor([0.2, 0.8, 5 / 17]), rtol=U32, atol=0)
    assert not torch.allclose(w, min_snr_weight(SNR, 5.0, False))


def test_min_snr_weight_at_the_clip_boundary():
    # γ = 4: SNR 4 is not clipped (min(4, 4) = 4) and SNR 16 is clipped to 4
    torch.testing.assert_close(min_snr_weight(SNR, 4.0, False), torch.tensor([1.0, 1.0, 0.25]), rtol=U32, atol=0)
    torch.testing.assert_close(min_snr_weight(SNR, 4.0, True), torch.tensor([0.2, 0.8, 4 / 17]), rtol=U32, atol=0)


@pytest.mark.parametrize("gamma", [0.0, -1.0])
@pytest.mark.parametrize("v", [False, True])
def test_min_snr_weight_off_when_gamma_is_not_positive(gamma, v):
    w = min_snr_weight(SNR, gamma, v)
    assert w.shape == SNR.shape and w.tolist() == [1.0, 1.0, 1.0]
