"""Neo backend/modules/k_prediction.py: `Prediction`, the schedule of `forge_objects.unet.model.predictor`.

`.prediction_type` is "epsilon" or "v_prediction"; buffers `alphas_cumprod`, `sigmas`, `log_sigmas` (1000 each, the
SD "scaled_linear" betas 0.00085…0.012); `zsnr` rescales to zero terminal SNR (a `ztsnr` key in the file)."""

from __future__ import annotations

import torch
from torch import nn


def rescale_zero_terminal_snr_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1, on ᾱ: shift and scale sqrt(ᾱ) so that its last value is 0."""
    sqrt = alphas_cumprod.sqrt()
    first, last = sqrt[0].clone(), sqrt[-1].clone()
    sqrt = (sqrt - last) * first / (first - last)
    return sqrt ** 2


class Prediction(nn.Module):
    def __init__(self, prediction_type="epsilon", beta_schedule="scaled_linear", linear_start=0.00085,
                 linear_end=0.012, timesteps=1000, zsnr=False):
        super().__init__()
        self.prediction_type = prediction_type
        self.beta_schedule = beta_schedule
        self.zsnr = zsnr
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if zsnr:
            alphas_cumprod = rescale_zero_terminal_snr_alphas_cumprod(alphas_cumprod)
            alphas_cumprod[-1] = 4.8973451890853435e-08
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float32))
        self.register_buffer("sigmas", sigmas.to(torch.float32))
        self.register_buffer("log_sigmas", sigmas.log().to(torch.float32))

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        return self.sigmas[timestep.long().clamp(0, len(self.sigmas) - 1)]
