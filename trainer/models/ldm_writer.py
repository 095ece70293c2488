"""diffusers / transformers components → one single-file state dict in the webui's LDM key layout.

The inverse of diffusers' LDM→diffusers converters (the round-trip test holds the two together). Used to
write the demo models; the same layout is what SD1.5 / SD2 / SDXL releases and the webui use.
"""

from __future__ import annotations

import math
import re

import torch

from .family import UNET_PREFIX, VAE_PREFIX, Family, TextEncoderSpec

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_DIRECT = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    head = _RESNET_TO_LDM.get(head, head)
    return f"{head}.{tail}" if tail else head


def unet_key_to_ldm(key: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str:
    """One diffusers UNet2DConditionModel key (or module path) → its LDM name, without the prefix.

    Worked examples with layers_per_block n=2 (input index = 1 + 3·level + layer, output = 3·level + layer):
        down_blocks.1.resnets.0.conv1.weight    → input_blocks.4.0.in_layers.2.weight
        down_blocks.1.downsamplers.0.conv.bias  → input_blocks.6.0.op.bias
        up_blocks.1.attentions.2.proj_out       → output_blocks.5.1.proj_out
        up_blocks.0.upsamplers.0.conv.weight    → output_blocks.2.1.conv.weight   (no attention in up block 0)
    """
    n = layers_per_block
    module, _, param = key.rpartition(".")
    if key in _UNET_DIRECT:
        return _UNET_DIRECT[key]
    if module in _UNET_DIRECT:
        return f"{_UNET_DIRECT[module]}.{param}"
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, layer, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        idx = 1 + (n + 1) * level + layer
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(\..+)?$", key):
        return f"input_blocks.{(n + 1) * (int(m.group(1)) + 1)}.0.op{m.group(2) or ''}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m.group(1))}.{_resnet(m.group(2))}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m.group(1)}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, layer, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        idx = (n + 1) * level + layer
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv(\..+)?$", key):
        level = int(m.group(1))
        slot = 2 if level in up_blocks_with_attention else 1
        return f"output_blocks.{(n + 1) * level + n}.{slot}.conv{m.group(2) or ''}"
    raise ValueError(f"no LDM name for UNet key {key!r}")


def up_blocks_with_attention(unet_config) -> set[int]:
    return {i for i, kind in enumerate(unet_config["up_block_types"]) if "CrossAttn" in kind}


def unet_to_ldm(state: dict[str, torch.Tensor], unet_config) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys → `model.diffusion_model.*` (SD1/SD2/SDXL share the scheme)."""
    with_attention = up_blocks_with_attention(unet_config)
    n = unet_config["layers_per_block"]
    return {UNET_PREFIX + unet_key_to_ldm(k, n, with_attention): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys → `first_stage_model.*` (attention projections back to 1×1 convs)."""
    out = {}
    for key, value in state.items():
        ldm = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            part, module, param = m.groups()
            ldm = f"{part}.mid.attn_1.{_VAE_ATTN_TO_LDM[module]}.{param}"
            if param == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            ldm = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            ldm = f"encoder.down.{m.group(1)}.downsample.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"decoder.up.{num_levels - 1 - int(m.group(1))}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            ldm = f"decoder.up.{num_levels - 1 - int(m.group(1))}.upsample.{m.group(2)}"
        ldm = ldm.replace(".conv_shortcut.", ".nin_shortcut.")
        out[VAE_PREFIX + ldm] = value
    return out


def _text_model_key(key: str) -> str:
    """Model key in either transformers spelling → `text_model.*` / `text_projection.*`."""
    if key.startswith(("text_model.", "text_projection.")):
        return key
    return "text_model." + key


def hf_clip_to_ldm(state: dict[str, torch.Tensor], spec: TextEncoderSpec) -> dict[str, torch.Tensor]:
    out = {spec.prefix + _text_model_key(k): v for k, v in state.items() if not k.endswith("position_ids")}
    positions = next(v for k, v in state.items() if k.endswith("position_embedding.weight")).shape[0]
    out[spec.prefix + "text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_to_ldm(
    state: dict[str, torch.Tensor], spec: TextEncoderSpec, extra_block: dict[str, torch.Tensor] | None = None,
    text_projection: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """transformers CLIP tower → open_clip layout (fused q/k/v `in_proj`, `resblocks`, `ln_final`, ...).

    `extra_block` is the unused last resblock SD2 files carry (in open_clip names, without prefix);
    `text_projection` is stored `[width, embed]` (transposed from transformers' Linear).
    """
    p = spec.prefix
    state = {_text_model_key(k): v for k, v in state.items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    layers = 0
    for key, value in state.items():
        if key == "text_model.embeddings.token_embedding.weight":
            out[p + "token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out[p + "positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[p + "ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out[p + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
            layers = max(layers, int(m.group(1)) + 1)
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"{p}transformer.resblocks.{m.group(1)}.{_OPEN_CLIP_LAYER[m.group(2)]}.{m.group(3)}"] = value
        else:
            raise ValueError(f"no open_clip name for text-encoder key {key!r}")
    for (layer, param), parts in qkv.items():
        out[f"{p}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if extra_block:
        for name, value in extra_block.items():
            out[f"{p}transformer.resblocks.{layers}.{name}"] = value
    if text_projection is not None:
        out[p + "text_projection"] = text_projection
    out[p + "logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return out


def schedule_buffers(family: Family, num_timesteps=1000, beta_start=0.00085, beta_end=0.012) -> dict:
    """The DDPM buffers LDM (SD1/SD2) or sgm (SDXL) models store beside their weights."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    if family.is_sdxl:
        return {"denoiser.sigmas": ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()}
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - prev) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}
