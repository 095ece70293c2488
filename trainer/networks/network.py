"""A network: the adapters of one LoRA / LoCon / LoHa, attached to a UNet and (with BASE) the text encoders.

The base weights are never written. `multiplier` scales every adapter (0 = the base model exactly);
`with network.at(m):` sets it for a block of code. Upstream's ADDifT trains at ±0.25.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from ..models.family import Family
from .blocks import BLOCK_IDS
from .targets import Target, all_candidates, modules_per_block, select_targets
from .types import network_type, type_of_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkSpec:
    """What to build; names follow the upstream settings."""

    network_type: str = "lierla"
    rank: int = 16
    alpha: float = 8.0
    conv_rank: int = 0  # 0 → rank
    conv_alpha: float = 0.0  # 0 → alpha
    element: str = "Full"
    blocks: tuple[str, ...] = BLOCK_IDS

    def rank_alpha(self, target: Target) -> tuple[int, float]:
        if target.is_kxk_conv and network_type(self.network_type).kxk_rank:
            return self.conv_rank or self.rank, self.conv_alpha or self.alpha
        return self.rank, self.alpha


class Network(nn.Module):
    def __init__(self, family: Family, spec: NetworkSpec, adapters, targets: list[Target]):
        super().__init__()
        self.family = family
        self.spec = spec
        self.adapters = nn.ModuleList(adapters)
        self.blocks_of = {t.lora_name: t.block for t in targets}
        self.is_text = {t.lora_name: t.is_text_encoder for t in targets}
        self._attached = False
        self._multiplier = 1.0

    # -- attaching ---------------------------------------------------------------------------------------------
    def attach(self) -> "Network":
        if not self._attached:
            for adapter in self.adapters:
                adapter.attach()
            self._attached = True
        return self

    def detach(self) -> None:
        if self._attached:
            for adapter in reversed(self.adapters):
                adapter.detach()
            self._attached = False

    # -- multiplier ----------------------------------------------------------------------------------------------
    @property
    def multiplier(self) -> float:
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        for adapter in self.adapters:
            adapter.multiplier = self._multiplier

    @contextlib.contextmanager
    def at(self, multiplier: float):
        previous = self.multiplier
        self.multiplier = multiplier
        try:
            yield self
        finally:
            self.multiplier = previous

    # -- training ------------------------------------------------------------------------------------------------
    def text_adapters(self):
        return [a for a in self.adapters if self.is_text[a.lora_name]]

    def unet_adapters(self):
        return [a for a in self.adapters if not self.is_text[a.lora_name]]

    def param_groups(self, unet_lr: float, text_lr: float | None = None) -> list[dict]:
        """Text encoder first (upstream's CSV puts its LR in column 1), then the UNet."""
        groups = []
        text = [p for a in self.text_adapters() for p in a.parameters()]
        if text:
            groups.append({"params": text, "lr": text_lr or unet_lr})
        unet = [p for a in self.unet_adapters() for p in a.parameters()]
        if unet:
            groups.append({"params": unet, "lr": unet_lr})
        return groups

    def modules_per_block(self) -> dict[str, int]:
        counts = {b: 0 for b in BLOCK_IDS}
        for adapter in self.adapters:
            counts[self.blocks_of[adapter.lora_name]] += 1
        return counts

    def save_tensors(self, strength: float = 1.0) -> dict[str, torch.Tensor]:
        """`<lora_name>.<part>` → tensor for every adapter (still in training dtype, on its device)."""
        out = {}
        for adapter in self.adapters:
            for part, tensor in adapter.save_tensors(strength).items():
                out[f"{adapter.lora_name}.{part}"] = tensor
        return out


def create_network(family: Family, unet, text_encoders, spec: NetworkSpec, dtype=torch.float32,
                   device=None) -> Network:
    """Build, move and attach a new network for `spec`; logs how many layers each block got."""
    targets = select_targets(family, unet, text_encoders, spec.network_type, spec.element, spec.blocks)
    cls = network_type(spec.network_type).adapter()
    adapters = [cls(t.lora_name, t.module, *spec.rank_alpha(t)) for t in targets]
    network = Network(family, spec, adapters, targets)
    network.to(device=device or next(unet.parameters()).device, dtype=dtype)
    counts = {b: n for b, n in modules_per_block(targets).items() if n}
    log.info("%s: %d modules (%d text encoder) per block: %s", spec.network_type, len(adapters),
             sum(t.is_text_encoder for t in targets), counts)
    return network.attach()


def resume_network(family: Family, unet, text_encoders, tensors: dict[str, torch.Tensor], source: str,
                   dtype=torch.float32, device=None) -> Network:
    """A network with exactly the modules of a saved file, attached; its spec (type, linear and k×k conv rank
    and alpha, element, blocks) is read back from those modules, so a resumed run's metadata tells the truth."""
    from ..errors import UserError

    candidates = all_candidates(family, unet, text_encoders)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        grouped.setdefault(name, {})[part] = value
    unknown = sorted(n for n in grouped if n not in candidates)
    if unknown:
        raise UserError(f"network_resume {source}: {len(unknown)} module(s) do not exist in this model "
                        f"(first: {unknown[0]}); was it trained for another model family?")
    targets = [candidates[name] for name in grouped]
    try:
        kind = type_of_file(list(grouped.values()), {t.role for t in targets})
    except ValueError as err:
        raise UserError(f"network_resume {source}: {err}") from None
    cls = kind.adapter()
    adapters = []
    for target, (name, parts) in zip(targets, grouped.items()):
        alpha = float(parts["alpha"]) if "alpha" in parts else None
        adapter = cls(name, target.module, cls.ranks_in(parts), alpha)
        adapter.load_tensors(parts)
        adapters.append(adapter)
    network = Network(family, spec_of(kind.name, adapters, targets), adapters, targets)
    network.to(device=device or next(unet.parameters()).device, dtype=dtype)
    log.info("resumed %s from %s: %d modules", kind.name, source, len(adapters))
    return network.attach()


def spec_of(type_name: str, adapters, targets: list[Target]) -> NetworkSpec:
    """The spec that describes existing adapters: the most common rank/alpha of the linear (and 1×1) layers and
    of the k×k convs (0 when there are none, as in a new spec), the attention element, the blocks present."""

    def common(values, default):
        return Counter(values).most_common(1)[0][0] if values else default

    kxk = [t.is_kxk_conv and network_type(type_name).kxk_rank for t in targets]
    linear = [(a.rank, float(a.alpha)) for a, k in zip(adapters, kxk) if not k]
    conv = [(a.rank, float(a.alpha)) for a, k in zip(adapters, kxk) if k]
    rank, alpha = common(linear, common(conv, (0, 0.0)))
    conv_rank, conv_alpha = common(conv, (0, 0.0))
    if (conv_rank, conv_alpha) == (rank, alpha):
        conv_rank, conv_alpha = 0, 0.0  # "same as linear", as a new spec writes it
    unet = [t.lora_name for t in targets if not t.is_text_encoder]
    element = "Full"
    if unet and all("attn2" in n for n in unet):
        element = "CrossAttention"
    elif unet and all("attn1" in n for n in unet):
        element = "SelfAttention"
    blocks = tuple(b for b in BLOCK_IDS if any(t.block == b for t in targets))
    return NetworkSpec(network_type=type_name, rank=rank, alpha=alpha, conv_rank=conv_rank, conv_alpha=conv_alpha,
                       element=element, blocks=blocks)
