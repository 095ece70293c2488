"""LoRA (lierla) and LoCon (c3lier): a low-rank branch beside an untouched Linear / Conv2d.

    y = base(x) + up(down(x)) · multiplier · alpha / rank          (Hu et al., 2021)

For a k×k conv, `down` has the base conv's geometry and `up` is 1×1, so ΔW = up ∘ down keeps the kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRAModule(nn.Module):
    """One adapter. It owns only `down`, `up` and `alpha`; the base layer is held outside its parameters."""

    algorithm = "lora"

    def __init__(self, lora_name: str, base: nn.Module, rank: int, alpha: float | None):
        super().__init__()
        self.lora_name = lora_name
        self._base = [base]  # a list, so the base weights are neither parameters nor state of the adapter
        self.rank = int(rank)
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, self.rank, bias=False)
            self.up = nn.Linear(self.rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise ValueError(f"{lora_name}: grouped convolutions are not supported")
            self.down = nn.Conv2d(base.in_channels, self.rank, base.kernel_size, base.stride, base.padding,
                                  base.dilation, bias=False)
            self.up = nn.Conv2d(self.rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"{lora_name}: cannot wrap {type(base).__name__}")
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        alpha = float(self.rank if not alpha else alpha)
        self.register_buffer("alpha", torch.tensor(alpha))
        self.scale = alpha / self.rank
        self.multiplier = 1.0
        self._base_forward = None

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def attach(self) -> None:
        """Route the base layer's forward through this adapter (chains with an adapter already there)."""
        base = self.base
        self._base_forward = base.forward
        base.forward = self.forward

    def detach(self) -> None:
        base = self.base
        if base.forward != self.forward:
            raise RuntimeError(f"{self.lora_name}: detach in the reverse order of attach")
        base.forward = self._base_forward
        self._base_forward = None

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self._base_forward(x, *args, **kwargs)
        if self.multiplier == 0:
            return out
        lora = self.up(self.down(x.to(self.down.weight.dtype)))
        return out + (lora * (self.multiplier * self.scale)).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """ΔW at multiplier 1, shaped like the base weight."""
        down, up = self.down.weight, self.up.weight
        if down.ndim == 2:
            return up @ down * self.scale
        return torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down) * self.scale

    def save_tensors(self, strength: float = 1.0) -> dict[str, torch.Tensor]:
        """Kohya part names → tensors. Strength s scales up and down by √s each, so ΔW by s."""
        root = math.sqrt(strength)
        return {
            "lora_down.weight": self.down.weight.detach() * root,
            "lora_up.weight": self.up.weight.detach() * root,
            "alpha": self.alpha.detach(),
        }

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.down.weight.copy_(tensors["lora_down.weight"])
            self.up.weight.copy_(tensors["lora_up.weight"])

    @classmethod
    def ranks_in(cls, tensors: dict[str, torch.Tensor]) -> int:
        return tensors["lora_down.weight"].shape[0]
