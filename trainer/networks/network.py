"""A network: the adapters of one LoRA / LoCon / LoHa, attached to a UNet and (with BASE) the text encoders.

The base weights are never written. `multiplier` scales every adapter (0 = the base model exactly);
`with network.at(m):` sets it for a block of code. Upstream's ADDifT trains at ±0.25.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.family import Family
from .blocks import BLOCK_IDS
from .lora import LoRAModule
from .targets import NETWORK_TYPES, Target, all_candidates, modules_per_block, select_targets

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
    extra: dict = field(default_factory=dict)

    def rank_alpha(self, target: Target) -> tuple[int, float]:
        if target.is_kxk_conv and self.network_type != "lierla":
            return self.conv_rank or self.rank, self.conv_alpha or self.alpha
        return self.rank, self.alpha


def adapter_class(network_type: str):
    if network_type == "loha":
        from .loha import loha_class

        return loha_class()
    if network_type in NETWORK_TYPES:
        return LoRAModule
    raise ValueError(f"unknown network_type {network_type!r}; known: {', '.join(NETWORK_TYPES)}")


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
    cls = adapter_class(spec.network_type)
    adapters = [cls(t.lora_name, t.module, *spec.rank_alpha(t)) for t in targets]
    network = Network(family, spec, adapters, targets)
    network.to(device=device or next(unet.parameters()).device, dtype=dtype)
    counts = {b: n for b, n in modules_per_block(targets).items() if n}
    log.info("%s: %d modules (%d text encoder) per block: %s", spec.network_type, len(adapters),
             sum(t.is_text_encoder for t in targets), counts)
    return network.attach()


def network_type_of(tensors: dict[str, torch.Tensor], candidates: dict[str, Target]) -> str:
    names = {k.split(".", 1)[0] for k in tensors}
    if any(k.endswith(".hada_w1_a") for k in tensors):
        return "loha"
    roles = {candidates[n].role for n in names if n in candidates}
    return "c3lier" if roles - {"attention", "text"} else "lierla"


def resume_network(family: Family, unet, text_encoders, tensors: dict[str, torch.Tensor], source: str,
                   dtype=torch.float32, device=None, blocks=BLOCK_IDS) -> Network:
    """A network with exactly the modules of a saved file (rank and alpha from the file), attached."""
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
    network_type = network_type_of(tensors, candidates)
    cls = adapter_class(network_type)
    adapters, targets = [], []
    for name, parts in grouped.items():
        target = candidates[name]
        alpha = float(parts["alpha"]) if "alpha" in parts else None
        adapter = cls(name, target.module, cls.ranks_in(parts), alpha)
        adapter.load_tensors(parts)
        adapters.append(adapter)
        targets.append(target)
    ranks = sorted({a.rank for a in adapters})
    spec = NetworkSpec(network_type=network_type, rank=ranks[-1], alpha=float(adapters[0].alpha),
                       blocks=tuple(blocks))
    network = Network(family, spec, adapters, targets)
    network.to(device=device or next(unet.parameters()).device, dtype=dtype)
    log.info("resumed %s from %s: %d modules", network_type, source, len(adapters))
    return network.attach()
