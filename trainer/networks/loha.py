"""LoHa: the lycoris-lora package's algorithm and module, driven by our targeting and naming.

    ΔW = (w1a·w1b) ⊙ (w2a·w2b) · alpha / rank,  Tucker cores t1, t2 for k×k convs     (Hyeon-Woo et al., 2022)

We build lycoris' `LohaModule` in bypass mode (base output + ΔW applied to the input: the base weight is never
rebuilt or written) and add the small interface the network uses. lycoris is imported only when a LoHa network
is created, so a missing or broken package never stops the extension from loading.
"""

from __future__ import annotations

import functools
import math

import torch

from ..errors import UserError

WEIGHT_NAMES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")


@functools.lru_cache(maxsize=1)
def loha_class():
    try:
        from lycoris.modules.loha import LohaModule
    except Exception as err:  # ImportError, or a broken install raising anything at import
        raise UserError(f"network_type loha needs the lycoris-lora package ({type(err).__name__}: {err})") from None

    class LoHaModule(LohaModule):
        algorithm = "loha"

        def __init__(self, lora_name, base, rank, alpha):
            super().__init__(lora_name, base, multiplier=1.0, lora_dim=int(rank), alpha=alpha or rank,
                             use_tucker=True, bypass_mode=True)
            self.rank = int(rank)

        @property
        def base(self):
            return self.org_module[0]

        def attach(self):
            self.apply_to()

        def detach(self):
            self.restore()

        def forward(self, x, *args, **kwargs):
            if self.multiplier == 0:
                return self.org_forward(x, *args, **kwargs)
            return super().forward(x, *args, **kwargs)

        def delta_weight(self) -> torch.Tensor:
            """ΔW at multiplier 1 (alpha/rank applied once; lycoris' get_diff_weight would apply it twice)."""
            from lycoris.functional.loha import diff_weight

            t1, t2 = (self.hada_t1, self.hada_t2) if self.tucker else (None, None)
            delta = diff_weight(self.hada_w1_b, self.hada_w1_a, self.hada_w2_b, self.hada_w2_a, t1, t2,
                                gamma=self.scale)
            return delta.reshape(self.shape) * self.scalar

        def save_tensors(self, strength: float = 1.0) -> dict[str, torch.Tensor]:
            """lycoris' own key set; strength s scales w1a and w2a by √s each, so ΔW by s."""
            tensors = {k: v.detach() for k, v in self.custom_state_dict().items()}
            root = math.sqrt(strength)
            tensors["hada_w1_a"] = tensors["hada_w1_a"] * root
            tensors["hada_w2_a"] = tensors["hada_w2_a"] * root
            return tensors

        def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                for name in WEIGHT_NAMES:
                    if name in tensors:
                        getattr(self, name).copy_(tensors[name])

        @classmethod
        def ranks_in(cls, tensors: dict[str, torch.Tensor]) -> int:
            return tensors["hada_w1_b"].shape[0]

    return LoHaModule
