"""LDM configs (the webui's `.yaml` convention) → diffusers / transformers configs, fully offline.

The UNet and VAE configs come from diffusers' own converters; the text encoders' configs are read off the
tensor shapes (an LDM yaml names a CLIP architecture but not its sizes), with one head per 64 channels
(open_clip's and OpenAI CLIP's rule; 1 head below 64).
"""

from __future__ import annotations

import re
import warnings

from pathlib import Path

import yaml

from ..errors import CheckpointError
from .family import Family, TextEncoderSpec

CLIP_VOCAB_SIZE = 49408
CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407
SDXL_TIME_EMBED_DIM = 256  # per time id; SDXL has 6 ids → adm_in = pooled + 6·256
CONFIG_DIR = Path(__file__).parent / "configs"


def sidecar_yaml(checkpoint: Path) -> Path | None:
    """`<checkpoint>.yaml` beside the file (the webui's convention), if there is one."""
    candidate = Path(checkpoint).with_suffix(".yaml")
    return candidate if candidate.is_file() else None


def load_ldm_config(family: Family, checkpoint: Path | None = None) -> tuple[dict, str]:
    """The LDM config to build with, and where it came from: the sidecar if present, else ours."""
    side = sidecar_yaml(checkpoint) if checkpoint is not None else None
    if side is not None:
        try:
            config = yaml.safe_load(side.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise CheckpointError(side, f"cannot parse the config beside the checkpoint ({str(err).splitlines()[0]})")
        if not isinstance(config, dict) or "model" not in config:
            raise CheckpointError(side, "is not an LDM model config (no top-level 'model:')")
        return config, str(side)
    text = (CONFIG_DIR / family.config_file).read_text(encoding="utf-8")
    return yaml.safe_load(text), f"shipped {family.config_file}"


def _params(config: dict) -> dict:
    return config["model"].get("params", {})


def unet_params(config: dict) -> dict:
    params = _params(config)
    node = params.get("unet_config") or params.get("network_config")
    if not node:
        raise ValueError("the LDM config has no unet_config/network_config")
    return node["params"]


def parameterization(config: dict) -> str | None:
    """'v' or 'eps' if the config says so, else None."""
    params = _params(config)
    if "parameterization" in params:
        return "v" if params["parameterization"] == "v" else "eps"
    scaling = (params.get("denoiser_config", {}).get("params", {}).get("scaling_config", {}) or {}).get("target", "")
    if scaling.endswith("VScaling") or scaling.endswith("VScalingWithEDMcNoise"):
        return "v"
    if scaling.endswith("EpsScaling"):
        return "eps"
    return None


def noise_schedule(config: dict) -> dict:
    """DDPM scaled-linear schedule parameters (SDXL's sgm configs use the same legacy defaults)."""
    params = _params(config)
    return {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
    }


def unet_config(config: dict, family: Family, checkpoint) -> dict:
    """UNet2DConditionModel kwargs via diffusers' converter, with the SDXL added-conditioning made explicit."""
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # image_size is "deprecated" there; we pass it to avoid a hub-free guess
        unet = create_unet_diffusers_config_from_ldm(config, checkpoint, image_size=family.resolution)
    if family.is_sdxl:
        # diffusers decides "SDXL" from context_dim ∈ {1280, 2048}; non-standard (tiny) sizes need it said.
        unet.update(
            class_embed_type=None,
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=unet_params(config)["adm_in_channels"],
        )
    if family.is_sd2:
        unet["upcast_attention"] = True  # SD2 overflows in fp16 attention otherwise (upstream does the same)
    return unet


def vae_config(config: dict, family: Family, checkpoint) -> dict:
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae = create_vae_diffusers_config_from_ldm(config, checkpoint, image_size=family.resolution)
    vae["scaling_factor"] = float(_params(config).get("scale_factor", family.vae_scale))
    if family.is_sdxl:
        vae["force_upcast"] = True  # the SDXL VAE overflows in fp16
    return vae


def _count_layers(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def text_encoder_config(spec: TextEncoderSpec, keys, shape, path="<checkpoint>"):
    """A `CLIPTextConfig` whose sizes are read off the stored tensors of one tower."""
    from transformers import CLIPTextConfig

    p = spec.prefix
    if spec.kind == "hf_clip":
        base = p + "text_model."
        if base + "embeddings.token_embedding.weight" not in keys:
            raise CheckpointError(path, f"text encoder at {p}* is incomplete (no token embedding)")
        vocab, hidden = shape(base + "embeddings.token_embedding.weight")
        positions = shape(base + "embeddings.position_embedding.weight")[0]
        layers = _count_layers(keys, re.escape(base) + r"encoder\.layers\.(\d+)\.")
        intermediate = shape(base + "encoder.layers.0.mlp.fc1.weight")[0]
        act = "quick_gelu"
        projection = hidden
    else:
        if p + "token_embedding.weight" not in keys:
            raise CheckpointError(path, f"text encoder at {p}* is incomplete (no token embedding)")
        vocab, hidden = shape(p + "token_embedding.weight")
        positions = shape(p + "positional_embedding")[0]
        layers = _count_layers(keys, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
        if spec.drop_last_block:
            layers -= 1
        intermediate = shape(p + "transformer.resblocks.0.mlp.c_fc.weight")[0]
        act = "gelu"
        projection = shape(p + "text_projection")[1] if p + "text_projection" in keys else hidden
    if layers < 1:
        raise CheckpointError(path, f"text encoder at {p}* has no usable layers")
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        projection_dim=projection,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=positions,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=1,
    )
