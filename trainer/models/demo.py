"""Tiny random-weight checkpoints with the real block topology, written in the webui's LDM key layout.

Same key names as SD1.5 / SD2 / SDXL files (so block IDs and LoRA names are the real ones), narrow channels and
few text-encoder layers so a training step takes well under a second on a CPU. Each file gets a `.yaml` sidecar
(the webui's convention) because its sizes differ from the released models.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..fileio import write_text_atomic
from . import ldm_config, ldm_writer
from .checkpoint import write_safetensors_atomic
from .family import FAMILIES, Family

TEXT_WIDTH = 128  # demo text towers: 2 heads under the one-head-per-64-channels rule
SDXL_TE2_WIDTH = 192  # SDXL's two towers must differ in width: loaders tell them apart by shape


@dataclass(frozen=True)
class DemoSize:
    unet: dict  # overrides of the LDM unet params
    vae: dict  # overrides of the LDM ddconfig
    text_layers: tuple[int, ...]  # transformers layers per tower (SD2 files store one more)
    text_widths: tuple[int, ...]


DEMO_SIZES = {
    "sd1": DemoSize(
        unet={"model_channels": 32, "num_heads": 4, "context_dim": TEXT_WIDTH},
        vae={"ch": 32},
        text_layers=(2,),
        text_widths=(TEXT_WIDTH,),
    ),
    "sd2": DemoSize(
        unet={"model_channels": 32, "num_head_channels": 16, "context_dim": TEXT_WIDTH},
        vae={"ch": 32},
        text_layers=(2,),
        text_widths=(TEXT_WIDTH,),
    ),
    "sdxl": DemoSize(
        unet={
            "model_channels": 32,
            "num_head_channels": 16,
            "transformer_depth": [1, 2, 2],
            "context_dim": TEXT_WIDTH + SDXL_TE2_WIDTH,
            "adm_in_channels": SDXL_TE2_WIDTH + 6 * ldm_config.SDXL_TIME_EMBED_DIM,
        },
        vae={"ch": 32},
        text_layers=(2, 2),
        text_widths=(TEXT_WIDTH, SDXL_TE2_WIDTH),
    ),
}


# The released architectures (random weights; for benchmarks and load-time measurements, never committed).
FULL_SIZES = {
    "sd1": DemoSize(unet={}, vae={}, text_layers=(12,), text_widths=(768,)),
    "sd2": DemoSize(unet={}, vae={}, text_layers=(23,), text_widths=(1024,)),
    "sdxl": DemoSize(unet={}, vae={}, text_layers=(12, 32), text_widths=(768, 1280)),
}
# Real channel widths with one ResNet per level and two text layers: a mid-size model for benchmarks.
SMALL_SIZES = {
    "sd1": DemoSize(unet={"num_res_blocks": 1}, vae={"ch": 32}, text_layers=(2,), text_widths=(768,)),
    "sd2": DemoSize(unet={"num_res_blocks": 1}, vae={"ch": 32}, text_layers=(2,), text_widths=(1024,)),
    "sdxl": DemoSize(unet={"num_res_blocks": 1, "transformer_depth": [1, 1, 2]}, vae={"ch": 32},
                     text_layers=(2, 2), text_widths=(768, 1280)),
}
SIZES = {"tiny": DEMO_SIZES, "small": SMALL_SIZES, "full": FULL_SIZES}


def demo_ldm_config(family: Family, v_prediction: bool = False, size: str = "tiny") -> dict:
    config, _ = ldm_config.load_ldm_config(family)
    config = copy.deepcopy(config)
    size = SIZES[size][family.name]
    ldm_config.unet_params(config).update(size.unet)
    config["model"]["params"]["first_stage_config"]["params"]["ddconfig"].update(size.vae)
    if v_prediction:
        if family.is_sdxl:
            config["model"]["params"]["denoiser_config"]["params"]["scaling_config"]["target"] = (
                "sgm.modules.diffusionmodules.denoiser_scaling.VScaling"
            )
        else:
            config["model"]["params"]["parameterization"] = "v"
    return config


def _rerandomise_zero_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Layers that LDM initialises to zero must not be zero here: outputs have to depend on inputs."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and weight is not None and not weight.any():
            with torch.no_grad():
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)


def text_encoder_configs(family: Family, size: str = "tiny"):
    """(model class, CLIPTextConfig) per tower of a demo or full-size architecture."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sizes = SIZES[size][family.name]
    out = []
    for spec, layers, width in zip(family.text_encoders, sizes.text_layers, sizes.text_widths):
        cfg = CLIPTextConfig(
            vocab_size=ldm_config.CLIP_VOCAB_SIZE,
            hidden_size=width,
            intermediate_size=4 * width,
            projection_dim=width,
            num_hidden_layers=layers,
            num_attention_heads=max(1, width // 64),
            max_position_embeddings=77,
            hidden_act="quick_gelu" if spec.kind == "hf_clip" else "gelu",
            layer_norm_eps=1e-5,
            bos_token_id=ldm_config.CLIP_BOS_ID,
            eos_token_id=ldm_config.CLIP_EOS_ID,
            pad_token_id=1,
        )
        out.append((CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel, cfg))
    return out


def architecture(family: Family, size: str = "tiny", v_prediction: bool = False, device="cpu"):
    """(ldm_config, unet, vae, text_encoders) built with torch's default init (on `device`; "meta" is free)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    config = demo_ldm_config(family, v_prediction, size)
    with torch.device(device):
        unet = UNet2DConditionModel(**ldm_config.unet_config(config, family, {}))
        vae = AutoencoderKL(**ldm_config.vae_config(config, family, {}))
        text_encoders = [cls(cfg) for cls, cfg in text_encoder_configs(family, size)]
    return config, unet, vae, text_encoders


def random_components(family: Family, seed: int = 0, v_prediction: bool = False, size: str = "tiny"):
    """(ldm_config, unet, vae, text_encoders) with deterministic random weights, in fp32."""
    torch.manual_seed(seed)
    config, unet, vae, text_encoders = architecture(family, size, v_prediction)
    generator = torch.Generator().manual_seed(seed)
    for model in (unet, vae, *text_encoders):
        _rerandomise_zero_weights(model, generator)
        model.eval().requires_grad_(False)
    return config, unet, vae, text_encoders


def components_to_ldm(family: Family, unet, vae, text_encoders, generator=None) -> dict[str, torch.Tensor]:
    """All weights of one model in LDM names, plus the schedule buffers real files carry."""
    tensors = ldm_writer.unet_to_ldm(unet.state_dict(), unet.config)
    tensors.update(ldm_writer.vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    for spec, te in zip(family.text_encoders, text_encoders):
        state = te.state_dict()
        if spec.kind == "hf_clip":
            tensors.update(ldm_writer.hf_clip_to_ldm(state, spec))
            continue
        width = te.config.hidden_size
        extra = _random_open_clip_block(width, te.config.intermediate_size, generator) if spec.drop_last_block else None
        projection = None if spec.with_projection else torch.randn(width, width, generator=generator) * width**-0.5
        tensors.update(ldm_writer.open_clip_to_ldm(state, spec, extra_block=extra, text_projection=projection))
    tensors.update(ldm_writer.schedule_buffers(family))
    return tensors


def _random_open_clip_block(width: int, hidden: int, generator) -> dict[str, torch.Tensor]:
    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    return {
        "attn.in_proj_weight": rand(3 * width, width),
        "attn.in_proj_bias": torch.zeros(3 * width),
        "attn.out_proj.weight": rand(width, width),
        "attn.out_proj.bias": torch.zeros(width),
        "ln_1.weight": torch.ones(width),
        "ln_1.bias": torch.zeros(width),
        "ln_2.weight": torch.ones(width),
        "ln_2.bias": torch.zeros(width),
        "mlp.c_fc.weight": rand(hidden, width),
        "mlp.c_fc.bias": torch.zeros(hidden),
        "mlp.c_proj.weight": rand(width, hidden),
        "mlp.c_proj.bias": torch.zeros(width),
    }


def write_checkpoint(tensors: dict[str, torch.Tensor], config: dict, out: Path, dtype=torch.float16) -> Path:
    """Write `out` (safetensors) and `out.yaml` beside it; both atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    write_safetensors_atomic(cast, out, metadata={"traintrain.demo_model": "random weights, for tests and demos"})
    write_text_atomic(out.with_suffix(".yaml"), yaml.safe_dump(config, sort_keys=False))
    return out


def make_demo_model(family_name: str, out: str | Path, seed: int = 0, dtype=torch.float16,
                    v_prediction: bool = False, size: str = "tiny") -> Path:
    """Write a random checkpoint: `size="tiny"` (the demo/test model) or `"full"` (the released architecture)."""
    family = FAMILIES[family_name]
    config, unet, vae, text_encoders = random_components(family, seed, v_prediction, size)
    generator = torch.Generator().manual_seed(seed + 1)
    tensors = components_to_ldm(family, unet, vae, text_encoders, generator)
    return write_checkpoint(tensors, config, Path(out), dtype)
