"""The network types users pick (`network_type`): one entry each, the one list the settings dropdown, the
targeting, the metadata, resuming and the memory estimate read. A new type is its adapter module plus one line here.

- lierla: LoRA on the attention blocks' Linear / 1×1 layers (kohya's `networks.lora`);
- c3lier: LoCon, also the ResNet convs, time embedding projections, shortcuts and down/upsamplers;
- loha: lycoris-lora's LoHa on the same layers as c3lier (Tucker cores for k×k convs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

ATTENTION = frozenset({"attention"})
CONVS = frozenset({"attention", "resnet", "sampler"})


def _lora():
    from .lora import LoRAModule

    return LoRAModule


def _loha():
    from .loha import loha_class

    return loha_class()


@dataclass(frozen=True)
class NetworkType:
    name: str
    adapter: Callable[[], type]  # the adapter class, imported only when this type is used
    unet_roles: frozenset  # which UNet layers it wraps (targets.Target.role)
    ss_network_module: str  # what kohya-style loaders read from the metadata
    file_part: str  # a tensor part name every module of a saved file of this type has
    kxk_rank: bool = True  # k×k convs take network_conv_rank / network_conv_alpha
    fixed_args: dict = field(default_factory=dict)  # extra `ss_network_args`
    memory_fraction: float = 0.012  # adapter parameters / UNet parameters at rank 16 (memory estimate)


NETWORK_TYPES: dict[str, NetworkType] = {t.name: t for t in (
    NetworkType("lierla", _lora, ATTENTION, "networks.lora", "lora_down.weight", kxk_rank=False,
                memory_fraction=0.004),
    NetworkType("c3lier", _lora, CONVS, "networks.lora", "lora_down.weight"),
    NetworkType("loha", _loha, CONVS, "lycoris.kohya", "hada_w1_a", fixed_args={"algo": "loha", "use_tucker": "True"}),
)}


def network_type(name: str) -> NetworkType:
    try:
        return NETWORK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown network_type {name!r}; known: {', '.join(NETWORK_TYPES)}") from None


def type_of_file(parts: list[dict], roles: set[str]) -> NetworkType:
    """The first type (in the order above) whose file parts every module has and whose layers cover `roles`."""
    for entry in NETWORK_TYPES.values():
        if all(entry.file_part in p for p in parts) and roles <= entry.unet_roles | {"text"}:
            return entry
    raise ValueError("the file's modules match no network type")
