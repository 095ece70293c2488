"""Helpers several test files share: a tolerance derived from fp32 arithmetic, and a spy on trainer functions."""

from __future__ import annotations

import math

import torch

U32 = 2.0 ** -24  # fp32 unit round-off


def fp32_reorder_tolerance(model: torch.nn.Module, output: torch.Tensor) -> float:
    """How far two fp32 forwards of the same weights may differ when only their summation order differs (thread
    scheduling splits the reductions differently on a busy machine; a quiet run often shows no difference at all).

    A reduction of length K rounds K times; the roundings behave as a random walk, so its relative error is
    ≲ √K·u (the probabilistic bound of Higham & Mary, 2019), u = 2⁻²⁴. An output element passes through at most L
    reductions — every Linear and Conv2d, and two matrix products per attention — each at most K_max long (a
    linear's in_features, a conv's C_in·k·k; the attention products are shorter: head dim or tokens). Normalisation
    keeps activations O(1), so the relative errors add in quadrature: ≲ √L·√K_max·u per forward, relative to the
    output's scale; two forwards, twice that. (The demo UNets: L ≈ 320, K_max = 2304 → 1.5e-4 at max|y| ≈ 1.3,
    against 1.0e-6 seen on a busy machine; a weight off by 1 % moves the output by 1.3e-2.)"""
    reductions, longest = 0, 1
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            reductions, longest = reductions + 1, max(longest, module.in_features)
        elif isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            reductions, longest = reductions + 1, max(longest, k)
        elif "Attention" in type(module).__name__:
            reductions += 2
    return 2 * math.sqrt(reductions) * math.sqrt(longest) * U32 * output.abs().max().item()


def spy(monkeypatch, module, name):
    """Wrap `module.name` where any trainer module holds it (`from x import name` copies the binding); every call
    is recorded as (args, kwargs, result). All engine/mode/data/network modules are imported first, so none binds
    the real function after the patch, or keeps a wrapper from an earlier test."""
    import importlib
    import pkgutil
    import sys

    import trainer

    for info in pkgutil.walk_packages(trainer.__path__, "trainer."):
        if info.name.split(".")[1] in ("engine", "modes", "data", "networks", "models", "runner"):
            importlib.import_module(info.name)
    real = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("trainer") and getattr(mod, name, None) is real:
            monkeypatch.setattr(mod, name, wrapper)
    return calls
