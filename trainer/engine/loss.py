"""Per-sample losses, the min-SNR-γ weight (Hang et al., 2023, "Efficient Diffusion Training via Min-SNR
Weighting Strategy") and the debiased-estimation weight (Yu et al., 2023, "Debias the Training of Diffusion
Models"), as kohya sd-scripts applies them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The one list of losses (train_loss_function); element-wise, unreduced.
LOSSES = {"MSE": F.mse_loss, "L1": F.l1_loss, "Smooth-L1": F.smooth_l1_loss}


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, mask: torch.Tensor | None = None):
    """(B,) — the element loss in fp32, averaged over everything but the batch (over the mask if given)."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    element = LOSSES[kind](pred.float(), target.float(), reduction="none")
    if mask is None:
        return element.mean(dim=tuple(range(1, element.ndim)))
    mask = mask.float().expand_as(element)
    dims = tuple(range(1, element.ndim))
    return (element * mask).sum(dims) / mask.sum(dims).clamp(min=1)


def min_snr_weight(snr: torch.Tensor, gamma: float, is_v_prediction: bool) -> torch.Tensor:
    """(B,) weights: min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction; 1 when γ ≤ 0."""
    if gamma <= 0:
        return torch.ones_like(snr)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1) if is_v_prediction else clipped / snr


DEBIASED_SNR_MAX = 1000.0  # kohya clamps the SNR here, so t near 0 does not dominate


def debiased_weight(snr: torch.Tensor, is_v_prediction: bool) -> torch.Tensor:
    """(B,) weights of `debiased_estimation_loss`: 1/√SNR for ε-prediction, 1/(SNR + 1) for v-prediction, with the
    SNR clamped at 1000 (kohya sd-scripts' apply_debiased_estimation)."""
    snr = torch.clamp(snr, max=DEBIASED_SNR_MAX)
    return 1 / (snr + 1) if is_v_prediction else 1 / torch.sqrt(snr)
