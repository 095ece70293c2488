"""A module tree built from a state dict's own keys, with Forge's layer classes as leaves (not a Neo module).

Leaves are chosen from each key's name and shape: 4-D weight → Conv2d, 2-D → `ForgeOperations.Linear` (an
`nn.Module`, not an `nn.Linear`), 1-D weight+bias → LayerNorm inside `transformer_blocks` (else GroupNorm);
containers are `nn.Module` / `nn.ModuleList`, so `named_modules()` gives the LDM paths and `state_dict()` has exactly
the keys the tree was built from. No forward."""

from __future__ import annotations

import re

import torch
from torch import nn

from backend.operations import ForgeOperations

LAYER_NORM_NAME = re.compile(r"^(norm\d|ln_\w+|layer_norm\d*)$")


class TreeModule(nn.Module):
    """A container (or a leaf of unusual tensors) of a tree built from keys."""


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _groups(channels: int) -> int:
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)


def _leaf(tensors: dict, path: list[str], dtype):
    if "weight" not in tensors or not set(tensors) <= {"weight", "bias"}:
        return None
    weight, bias, name = tensors["weight"], "bias" in tensors, path[-1]
    if weight.ndim == 4:
        return ForgeOperations.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                                      padding=weight.shape[2] // 2, bias=bias, dtype=dtype)
    if weight.ndim == 2:
        return ForgeOperations.Linear(weight.shape[1], weight.shape[0], bias=bias, dtype=dtype)
    if weight.ndim == 1 and bias:
        channels = weight.shape[0]
        if "transformer_blocks" in path and LAYER_NORM_NAME.match(name):
            return ForgeOperations.LayerNorm(channels, dtype=dtype)
        return ForgeOperations.GroupNorm(_groups(channels), channels, dtype=dtype)
    return None


def _make(node: dict, path: list[str], cls, dtype) -> nn.Module:
    tensors = node.get(None, {})
    children = {k: v for k, v in node.items() if k is not None}
    module = _leaf(tensors, path, dtype) if tensors and cls is None else None
    if module is None and cls is None and not tensors and children and all(k.isdigit() for k in children):
        module = nn.ModuleList([nn.Identity() for _ in range(max(int(k) for k in children) + 1)])
        for key, child in children.items():
            module[int(key)] = _make(child, path + [key], None, dtype)
        return module
    if module is None:
        module = (cls or TreeModule)()
        for name, tensor in tensors.items():
            if tensor.is_floating_point():
                module.register_parameter(name, nn.Parameter(torch.empty(tensor.shape, dtype=dtype),
                                                             requires_grad=False))
            else:
                module.register_buffer(name, torch.zeros(tensor.shape, dtype=tensor.dtype))
    for key in sorted(children, key=_natural):
        module.add_module(key, _make(children[key], path + [key], None, dtype))
    return module


def build_tree(tensors: dict, cls, dtype) -> nn.Module:
    trie: dict = {}
    for key, tensor in tensors.items():
        *path, name = key.split(".")
        node = trie
        for segment in path:
            node = node.setdefault(segment, {})
        node.setdefault(None, {})[name] = tensor
    return _make(trie, [], cls, dtype)
