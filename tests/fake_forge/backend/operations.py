"""Neo backend/operations.py (forge-api.md F4.1): the layer classes Forge builds its models from.

`ForgeOperations.Linear` subclasses **`torch.nn.Module`**, not `torch.nn.Linear`: `isinstance(m, nn.Linear)` is False
for every Linear of the UNet and of the HF CLIP towers. Its `_load_from_state_dict` wraps the file tensor as the
parameter (no copy into a pre-made one) and its forward casts the weight to the input's dtype and device (the manual
cast). `Conv2d`, `GroupNorm`, `LayerNorm` and `Embedding` subclass torch's (the norms and the conv cast too).

`using_forge_operations(dtype=...)` swaps `torch.nn.Linear/Conv2d/GroupNorm/LayerNorm/Embedding` process-wide while
modules are built (as Neo does: do not build other modules concurrently), so code that says `nn.Linear(...)` — the HF
CLIP — gets these classes. Online LoRAs (`forge_online_loras`) are not merged here (not faked).
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

_swap_lock = threading.Lock()
current_dtype = None  # the storage dtype of the modules being built (None: torch's default)


def get_weight_and_bias(layer, dtype=None, device=None):
    """The layer's weight and bias cast to `dtype` / `device` (no copy when they match)."""
    weight = layer.weight
    bias = getattr(layer, "bias", None)
    if weight is not None:
        weight = weight.to(device=device or weight.device, dtype=dtype or weight.dtype)
    if bias is not None:
        bias = bias.to(device=device or bias.device, dtype=dtype or bias.dtype)
    return weight, bias


def weights_manual_cast(layer, x):
    return get_weight_and_bias(layer, dtype=x.dtype if x.is_floating_point() else None, device=x.device)


class ForgeOperations:
    class Linear(torch.nn.Module):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__()
            self.in_features = in_features
            self.out_features = out_features
            dtype = dtype or current_dtype
            # allocated so that code which initialises weights after construction (transformers) works; replaced by
            # the file's tensor when a state dict is loaded
            self.weight = torch.nn.Parameter(torch.empty((out_features, in_features), device=device, dtype=dtype),
                                             requires_grad=False)
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype),
                                               requires_grad=False)
            else:
                self.register_parameter("bias", None)
            self.parameters_manual_cast = True
            self.forge_online_loras = None

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                  error_msgs):
            for name in ("weight", "bias"):
                key = prefix + name
                if key in state_dict:
                    setattr(self, name, torch.nn.Parameter(state_dict[key], requires_grad=False))
                elif name == "weight" or self.bias is not None:
                    missing_keys.append(key)
            if strict:
                unexpected_keys.extend(k for k in state_dict
                                       if k.startswith(prefix) and k[len(prefix):] not in ("weight", "bias"))

        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return F.linear(x, weight, bias)

        def extra_repr(self):
            return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    class Conv2d(torch.nn.Conv2d):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("dtype", current_dtype)
            super().__init__(*args, **kwargs)
            self.parameters_manual_cast = True

        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return self._conv_forward(x, weight, bias)

    class GroupNorm(torch.nn.GroupNorm):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("dtype", current_dtype)
            super().__init__(*args, **kwargs)
            self.parameters_manual_cast = True

        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    class LayerNorm(torch.nn.LayerNorm):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("dtype", current_dtype)
            super().__init__(*args, **kwargs)
            self.parameters_manual_cast = True

        def forward(self, x):
            weight, bias = weights_manual_cast(self, x)
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    class Embedding(torch.nn.Embedding):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("dtype", current_dtype)
            super().__init__(*args, **kwargs)
            self.parameters_manual_cast = True


SWAPPED = ("Linear", "Conv2d", "GroupNorm", "LayerNorm", "Embedding")


@contextlib.contextmanager
def using_forge_operations(operations=None, device=None, dtype=None, manual_cast_enabled=False):
    """Build modules with Forge's layer classes: `torch.nn.<X>` is `operations.<X>` meanwhile (process-wide)."""
    global current_dtype
    operations = operations or ForgeOperations
    with _swap_lock:
        saved = {name: getattr(torch.nn, name) for name in SWAPPED}
        saved_dtype = current_dtype
        current_dtype = dtype
        try:
            for name in SWAPPED:
                setattr(torch.nn, name, getattr(operations, name))
            yield
        finally:
            for name, cls in saved.items():
                setattr(torch.nn, name, cls)
            current_dtype = saved_dtype
