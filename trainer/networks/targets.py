"""Which layers a network wraps, and the kohya name each one is saved under.

Layers are picked by type and structure (isinstance, module paths), never by class-name strings:
- lierla: every Linear / Conv2d inside a diffusers Transformer2DModel (proj_in/out, attn1/attn2 q k v out, ff);
- c3lier and loha: also ResnetBlock2D's conv1, conv2, time_emb_proj, conv_shortcut and the down/upsampler convs;
- with BASE selected: every Linear of the text encoder layers (q, k, v, out_proj, fc1, fc2).

Names (kohya, what A1111, ComfyUI and diffusers match):
- SD1/SD2 UNet: `lora_unet_` + diffusers path, e.g. `lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k`;
- SDXL UNet: `lora_unet_` + LDM path, e.g. `lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k` (kohya's SDXL style);
- text: `lora_te_` (SDXL: `lora_te1_`, `lora_te2_`) + `text_model_encoder_layers_0_self_attn_q_proj`, whatever
  the installed transformers calls its own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..models import ldm_writer
from ..models.family import Family
from . import types
from .blocks import BASE, BLOCK_IDS, block_of_ldm_name, check_blocks

ELEMENTS = ("Full", "CrossAttention", "SelfAttention")
RESNET_LAYERS = ("conv1", "conv2", "time_emb_proj", "conv_shortcut")


@dataclass(frozen=True)
class Target:
    lora_name: str
    module: nn.Module
    block: str  # one of BLOCK_IDS
    role: str  # "attention" | "resnet" | "sampler" | "text"
    is_text_encoder: bool

    @property
    def is_kxk_conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d) and any(k != 1 for k in self.module.kernel_size)


def text_encoder_prefixes(family: Family) -> list[str]:
    return ["lora_te1", "lora_te2"] if family.is_sdxl else ["lora_te"]


def _text_root(text_encoder: nn.Module) -> nn.Module:
    """The module that owns `embeddings` and `encoder` (transformers ≥ 5.6 flattened CLIPTextModel)."""
    root = text_encoder
    while hasattr(root, "text_model"):
        root = root.text_model
    if not hasattr(root, "encoder"):
        raise TypeError(f"{type(text_encoder).__name__} has no CLIP encoder")
    return root


def unet_lora_name(family: Family, path: str, unet_config) -> str:
    if family.is_sdxl:
        ldm = ldm_writer.unet_key_to_ldm(
            path, unet_config["layers_per_block"], ldm_writer.up_blocks_with_attention(unet_config)
        )
        return "lora_unet_" + ldm.replace(".", "_")
    return "lora_unet_" + path.replace(".", "_")


def unet_candidates(family: Family, unet: nn.Module) -> list[Target]:
    from diffusers.models import Transformer2DModel
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    config = unet.config
    found: list[tuple[str, nn.Module, str]] = []
    for name, module in unet.named_modules():
        if isinstance(module, Transformer2DModel):
            for child, layer in module.named_modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    found.append((f"{name}.{child}", layer, "attention"))
        elif isinstance(module, ResnetBlock2D):
            for child in RESNET_LAYERS:
                layer = getattr(module, child, None)
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    found.append((f"{name}.{child}", layer, "resnet"))
        elif isinstance(module, (Downsample2D, Upsample2D)) and isinstance(getattr(module, "conv", None), nn.Conv2d):
            found.append((f"{name}.conv", module.conv, "sampler"))
    targets = []
    for path, layer, role in found:
        ldm = ldm_writer.unet_key_to_ldm(path, config["layers_per_block"], ldm_writer.up_blocks_with_attention(config))
        targets.append(Target(unet_lora_name(family, path, config), layer, block_of_ldm_name(ldm), role, False))
    return targets


def text_candidates(family: Family, text_encoders) -> list[Target]:
    targets = []
    for prefix, te in zip(text_encoder_prefixes(family), text_encoders):
        root = _text_root(te)
        for index, layer_module in enumerate(root.encoder.layers):
            for child, layer in layer_module.named_modules():
                if isinstance(layer, nn.Linear):
                    name = f"{prefix}_text_model_encoder_layers_{index}_{child.replace('.', '_')}"
                    targets.append(Target(name, layer, BASE, "text", True))
    return targets


def all_candidates(family: Family, unet: nn.Module, text_encoders) -> dict[str, Target]:
    """Every layer any network type may wrap, by kohya name (used to resume from a file)."""
    targets = unet_candidates(family, unet) + text_candidates(family, text_encoders)
    by_name = {t.lora_name: t for t in targets}
    assert len(by_name) == len(targets), "two layers share one LoRA name"
    return by_name


def select_targets(
    family: Family,
    unet: nn.Module,
    text_encoders,
    network_type: str,
    element: str = "Full",
    blocks=BLOCK_IDS,
) -> list[Target]:
    """The layers a new network of `network_type` wraps, filtered by element and block selection."""
    roles = types.network_type(network_type).unet_roles
    if element not in ELEMENTS:
        raise ValueError(f"unknown network_element {element!r}; known: {', '.join(ELEMENTS)}")
    blocks = set(check_blocks(blocks))
    chosen = [t for t in unet_candidates(family, unet) if t.role in roles and t.block in blocks]
    if element != "Full":
        marker = "attn2" if element == "CrossAttention" else "attn1"
        chosen = [t for t in chosen if marker in t.lora_name]
    if BASE in blocks:
        chosen += text_candidates(family, text_encoders)
    return chosen


def modules_per_block(targets) -> dict[str, int]:
    counts = {b: 0 for b in BLOCK_IDS}
    for t in targets:
        counts[t.block] += 1
    return counts
