"""The model Forge Neo holds, seen as the trainer's tensors — without importing Forge (forge-api.md F4).

Neo's object graph is not the LDM one: the UNet is `forge_objects.unet.model.diffusion_model` (LDM key names), the
text encoders are HF CLIPs in `forge_objects.clip.cond_stage_model` (`clip_l`, SDXL also `clip_g`, whose OpenCLIP
weights Forge converted to HF names with separate q/k/v) and the VAE is `forge_objects.vae.first_stage_model` (LDM
key names). `ldm_entries` names every tensor by the checkpoint key the trainer's loader expects; CLIP-G goes back
to the OpenCLIP spelling (q/k/v fused again).

Forge loads every weight under `torch.inference_mode()`, and autograd refuses to save an inference tensor for
backward (F4.3), so none can be shared with a training graph as it is. `training_tensors` makes the trainer's
tensors outside inference mode, each once, in the dtype and on the device it trains in. Where such a tensor is an
exact copy of Forge's own (same dtype and device: the UNet and VAE on a CPU-only Forge), Forge's parameter is
pointed at it ("adopted") and Forge's inference tensor is released, so the process holds one copy, not two; Forge
computes with an ordinary tensor as well as with an inference one.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

UNET, VAE = "model.diffusion_model.", "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."
SDXL_TEXT_L = "conditioner.embedders.0.transformer."
SDXL_TEXT_G = "conditioner.embedders.1.model."

# HF CLIP names (under `text_model.`) → OpenCLIP names, for CLIP-G; q/k/v are fused into `in_proj_*`
_OPEN_CLIP_NAMES = [
    (re.compile(r"^embeddings\.token_embedding\.weight$"), "token_embedding.weight"),
    (re.compile(r"^embeddings\.position_embedding\.weight$"), "positional_embedding"),
    (re.compile(r"^final_layer_norm\.(weight|bias)$"), r"ln_final.\1"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$"),
     r"transformer.resblocks.\1.attn.out_proj.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$"), r"transformer.resblocks.\1.ln_1.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$"), r"transformer.resblocks.\1.ln_2.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)$"), r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)$"), r"transformer.resblocks.\1.mlp.c_proj.\2"),
]
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def is_forge_model(sd_model) -> bool:
    """A loaded Neo model (not the `FakeInitialModel` placeholder, not None during a reload)."""
    return sd_model is not None and getattr(sd_model, "forge_objects", None) is not None


def is_sdxl(sd_model) -> bool:
    return bool(getattr(sd_model, "is_sdxl", False))


@dataclass
class Entry:
    """One checkpoint tensor: Forge's tensor(s) and, where it is one of Forge's parameters or buffers as it is,
    the module and attribute holding it (what adoption re-points)."""

    key: str
    parts: list[torch.Tensor]  # one tensor; three (q, k, v) for a fused CLIP-G projection
    owner: tuple[torch.nn.Module, str] | None = None
    transpose: bool = False  # CLIP-G's text_projection: a Linear weight in Forge, a matrix in OpenCLIP

    @property
    def shape(self) -> tuple[int, ...]:
        first = tuple(self.parts[0].shape)
        if self.transpose:
            return first[::-1]
        if len(self.parts) > 1:
            return (sum(p.shape[0] for p in self.parts), *first[1:])
        return first

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype


def _owned(module: torch.nn.Module):
    """(local key, tensor, (owning module, attribute)) for each parameter and persistent buffer of `module`."""
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        for attr, p in sub._parameters.items():
            if p is not None:
                yield prefix + attr, p, (sub, attr)
        skip = getattr(sub, "_non_persistent_buffers_set", set())
        for attr, b in sub._buffers.items():
            if b is not None and attr not in skip:
                yield prefix + attr, b, (sub, attr)


def text_towers(sd_model) -> dict[str, torch.nn.Module]:
    """"clip_l" (and "clip_g") → the HF CLIPTextModel inside Forge's JointTextEncoder."""
    joint = sd_model.forge_objects.clip.cond_stage_model
    return {name: joint[name].transformer for name in ("clip_l", "clip_g") if name in joint}


def _hf_local(key: str) -> str | None:
    """An HF CLIP key without its `text_model.` level (transformers ≥ 5.6 has none), or None for keys the
    checkpoint does not carry."""
    if key.startswith("text_model."):
        key = key[len("text_model."):]
    return None if key.endswith("position_ids") else key


def ldm_entries(sd_model) -> list[Entry]:
    """Every tensor of Forge's model under its checkpoint (LDM) key."""
    objects = sd_model.forge_objects
    entries = [Entry(UNET + k, [t], owner) for k, t, owner in _owned(objects.unet.model.diffusion_model)]
    entries += [Entry(VAE + k, [t], owner) for k, t, owner in _owned(objects.vae.first_stage_model)]
    towers = text_towers(sd_model)
    if not is_sdxl(sd_model):
        entries += _hf_entries(towers["clip_l"], SD1_TEXT)
        return entries
    entries += _hf_entries(towers["clip_l"], SDXL_TEXT_L)
    entries += _open_clip_entries(towers["clip_g"], SDXL_TEXT_G)
    return entries


def _hf_entries(tower: torch.nn.Module, prefix: str) -> list[Entry]:
    """CLIP-L. Forge's has a `text_projection` that the checkpoint's CLIP-L (and the trainer's) lacks."""
    out = []
    for key, t, owner in _owned(tower):
        local = _hf_local(key)
        if local is None or local.startswith("text_projection"):
            continue
        out.append(Entry(prefix + "text_model." + local, [t], owner))
    return out


def _open_clip_entries(tower: torch.nn.Module, prefix: str) -> list[Entry]:
    out, qkv = [], {}
    for key, t, owner in _owned(tower):
        local = _hf_local(key)
        if local is None:
            continue
        if local == "text_projection.weight":
            out.append(Entry(prefix + "text_projection", [t], None, transpose=True))
            continue
        fused = _QKV.match(local)
        if fused:
            layer, which, kind = fused.groups()
            qkv.setdefault((int(layer), kind), {})[which] = t
            continue
        for pattern, name in _OPEN_CLIP_NAMES:
            if pattern.match(local):
                out.append(Entry(prefix + pattern.sub(name, local), [t], owner))
                break
        else:
            raise KeyError(f"Forge's CLIP-G has a tensor the trainer does not know: {key}")
    for (layer, kind), parts in sorted(qkv.items()):
        out.append(Entry(f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}",
                         [parts["q"], parts["k"], parts["v"]]))
    return out


def shapes(sd_model) -> dict[str, torch.Tensor]:
    """Keys, shapes and dtypes only (meta tensors): what the checks before loading read."""
    return {e.key: torch.empty(e.shape, dtype=e.dtype, device="meta") for e in ldm_entries(sd_model)}


def prediction_type(sd_model) -> str:
    return sd_model.forge_objects.unet.model.predictor.prediction_type


@dataclass
class Copied:
    tensors: dict[str, torch.Tensor]
    copied_bytes: int = 0
    adopted_bytes: int = 0  # of copied_bytes: tensors Forge now shares with the trainer instead of its own


def part_of(key: str) -> str:
    return "unet" if key.startswith(UNET) else "vae" if key.startswith(VAE) else "text"


def training_tensors(sd_model, device: torch.device, dtypes: dict[str, torch.dtype | None],
                     parts=("unet", "text", "vae")) -> Copied:
    """The trainer's tensors (outside inference mode) by checkpoint key, for the `parts` asked ("unet", "text",
    "vae"): `dtypes` per part (None: Forge's dtype). Floating tensors are cast; integer buffers keep their dtype."""
    device = torch.device(device)
    result = Copied({})
    with torch.inference_mode(False), torch.no_grad():
        for entry in ldm_entries(sd_model):
            part = part_of(entry.key)
            if part not in parts:
                continue
            target = dtypes.get(part) if entry.dtype.is_floating_point else None
            target = target or entry.dtype
            if len(entry.parts) > 1:
                tensor = torch.cat([p.to(device=device, dtype=target) for p in entry.parts])
            else:
                source = entry.parts[0]
                tensor = source.to(device=device, dtype=target, copy=True)
                if entry.transpose:
                    tensor = tensor.T.contiguous()
                elif entry.owner is not None and source.device == device and source.dtype == target:
                    _adopt(entry.owner, tensor)
                    result.adopted_bytes += tensor.numel() * tensor.element_size()
            result.copied_bytes += tensor.numel() * tensor.element_size()
            result.tensors[entry.key] = tensor
    return result


def _adopt(owner: tuple[torch.nn.Module, str], tensor: torch.Tensor) -> None:
    """Forge's module holds `tensor` (an ordinary tensor, equal to its inference one) from now on."""
    module, attr = owner
    if attr in module._parameters:
        old = module._parameters[attr]
        module._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)
    else:
        module._buffers[attr] = tensor


# -- merged LoRAs (F4.4) ---------------------------------------------------------------------------------------------
def merged_loras(sd_model) -> str:
    """What the last generation merged (`current_lora_hash`), "" when nothing."""
    value = getattr(sd_model, "current_lora_hash", None)
    return "" if value in (None, "", "[]", []) else str(value)


def restore_base_weights(sd_model) -> None:
    """Forge's original patchers have no LoRA patches: refreshing them puts the backups back (F4.4 item 3)."""
    original = sd_model.forge_objects_original
    with torch.inference_mode():  # as Forge itself refreshes
        original.unet.refresh_loras()
        original.clip.patcher.refresh_loras()



@contextlib.contextmanager
def unpatched(sd_model):
    """`sd_model.forge_objects` without LoRA patches for the block (a shallow copy of the original objects), then
    the patched ones back: the next generation merges its LoRAs again from the restored base."""
    patched = sd_model.forge_objects
    sd_model.forge_objects = sd_model.forge_objects_original.shallow_copy()
    try:
        yield
    finally:
        sd_model.forge_objects = patched
