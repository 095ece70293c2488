"""The model a webui already holds, seen as the trainer's tensors — without importing the webui.

`ldm_tensors(sd_model)` gives the webui model's own tensors under the checkpoint's (LDM) key names: detached views
from `state_dict()`, so nothing is copied, with the `.wrapped` levels the webui's hijack inserts removed
(webui-api.md A5, A6). models/components.build_components turns them into the trainer's UNet, text encoder(s) and
VAE, still sharing storage with the webui's. The rest is what training on them must leave as it found it: merged
`<lora:…>` weights restored through the Lora extension's own functions (A9), and `requires_grad` switched off for
the job and restored after it.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

from ..errors import UserError

HIJACK_LEVEL = ".wrapped."  # the hijack keeps each original module at `<wrapper>.wrapped`


def parts(sd_model) -> dict[str, torch.nn.Module]:
    """LDM prefix → the webui's module: the UNet wrapper, the VAE and the text encoder(s) (SDXL: the conditioner)."""
    text = ("conditioner", sd_model.conditioner) if getattr(sd_model, "is_sdxl", False) else (
        "cond_stage_model", sd_model.cond_stage_model)
    return {"model": sd_model.model, "first_stage_model": sd_model.first_stage_model, text[0]: text[1]}


def ldm_tensors(sd_model) -> dict[str, torch.Tensor]:
    """The webui model's tensors by checkpoint key: views sharing storage with its parameters (no copy)."""
    tensors = {}
    for prefix, module in parts(sd_model).items():
        for key, tensor in module.state_dict(prefix=prefix + ".").items():
            tensors[key.replace(HIJACK_LEVEL, ".")] = tensor
    return tensors


def storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def dtypes_by_part(tensors: dict[str, torch.Tensor]) -> dict[str, torch.dtype]:
    """The dtype most of each part's floating tensors are held in: "unet", "text", "vae"."""
    counts = {"unet": Counter(), "text": Counter(), "vae": Counter()}
    for key, t in tensors.items():
        if not t.is_floating_point():
            continue
        part = "unet" if key.startswith("model.") else "vae" if key.startswith("first_stage_model.") else "text"
        counts[part][t.dtype] += t.numel()
    return {part: c.most_common(1)[0][0] for part, c in counts.items() if c}


def devices_of(tensors: dict[str, torch.Tensor]) -> set[torch.device]:
    return {t.device for t in tensors.values()}


# -- the Lora extension's merged weights (webui-api.md A9) ----------------------------------------------------------
def merged_layers(sd_model) -> list[torch.nn.Module]:
    """Layers whose weights have a `<lora:…>` merged into them now (`network_current_names` not empty)."""
    return [m for m in sd_model.modules() if getattr(m, "network_current_names", ())]


def restore_base_weights(sd_model, networks) -> list[str]:
    """Put the base weights back where the Lora extension merged a network, through its own restore path, and mark
    those layers unmerged (so its next generation merges again from the base). Returns the networks that were
    merged. Refuses, changing nothing, when a merged layer has no backup (opts.lora_without_backup_weight)."""
    layers = merged_layers(sd_model)
    names = sorted({entry[0] for m in layers for entry in m.network_current_names})
    if not layers:
        return []
    if networks is None:
        raise UserError(f"the webui's weights have {', '.join(names)} merged in, and its Lora extension is not "
                        "there to restore them; reload the checkpoint, then start again")
    if any(getattr(m, "network_weights_backup", None) is None and getattr(m, "network_bias_backup", None) is None
           for m in layers):
        raise UserError(f"the webui's weights have <lora:{names[0]}> merged in without a backup (its "
                        "lora_without_backup_weight setting), so they cannot be restored; reload the checkpoint "
                        "in the webui, then start again")
    with torch.no_grad():
        for layer in layers:
            networks.network_restore_weights_from_backup(layer)
            networks.network_reset_cached_weight(layer)
    return names


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """`requires_grad` off for every parameter of `module` while the block runs, then each flag as it was."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
