"""Model families (SD1.x, SD2.x, SDXL base) and their detection from state-dict keys and shapes.

Every family constant the rest of the code needs (VAE scale, LDM prefixes, tokenizer padding, which hidden
layer feeds the UNet, default resolution, metadata names) lives in this table, not inline.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CheckpointError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text tower as it is stored in an LDM checkpoint."""

    prefix: str  # LDM key prefix, ending in "."
    kind: str  # "hf_clip" (CLIP-L, HF layout) or "open_clip" (fused in_proj, resblocks)
    pad_token: str  # "<|endoftext|>" for CLIP-L as SD1 uses it, "!" for OpenCLIP towers
    hidden_layer: str  # "last" = last_hidden_state (after final LN), "penultimate" = hidden_states[-2] (no LN)
    with_projection: bool  # CLIPTextModelWithProjection (SDXL's second tower gives the pooled vector)
    drop_last_block: bool = False  # SD2 stores 24 blocks but conditions on the penultimate one


@dataclass(frozen=True)
class Family:
    name: str  # "sd1" | "sd2" | "sdxl"
    title: str
    model_version: str  # kohya ss_base_model_version
    config_file: str  # shipped LDM yaml (trainer/models/configs); a <checkpoint>.yaml beside the file wins
    vae_scale: float
    vae_shift: float
    text_encoders: tuple[TextEncoderSpec, ...]
    resolution: int  # native training / inference side in pixels (eps variant)
    v_resolution: int

    @property
    def is_sdxl(self) -> bool:
        return self.name == "sdxl"

    @property
    def is_sd2(self) -> bool:
        return self.name == "sd2"


SD1 = Family(
    name="sd1",
    title="SD1.x",
    model_version="sd_v1",
    config_file="v1-inference.yaml",
    vae_scale=0.18215,
    vae_shift=0.0,
    text_encoders=(
        TextEncoderSpec("cond_stage_model.transformer.", "hf_clip", "<|endoftext|>", "last", False),
    ),
    resolution=512,
    v_resolution=512,
)

SD2 = Family(
    name="sd2",
    title="SD2.x",
    model_version="sd_v2",
    config_file="v2-inference.yaml",
    vae_scale=0.18215,
    vae_shift=0.0,
    text_encoders=(
        TextEncoderSpec("cond_stage_model.model.", "open_clip", "!", "last", False, drop_last_block=True),
    ),
    resolution=512,
    v_resolution=768,
)

SDXL = Family(
    name="sdxl",
    title="SDXL base",
    model_version="sdxl_base_v1-0",
    config_file="sd_xl_base.yaml",
    vae_scale=0.13025,
    vae_shift=0.0,
    text_encoders=(
        TextEncoderSpec("conditioner.embedders.0.transformer.", "hf_clip", "<|endoftext|>", "penultimate", False),
        TextEncoderSpec("conditioner.embedders.1.model.", "open_clip", "!", "penultimate", True),
    ),
    resolution=1024,
    v_resolution=1024,
)

FAMILIES = {f.name: f for f in (SD1, SD2, SDXL)}

# Signature keys (with the shapes that matter) — checked in this order.
_SDXL_TE2 = "conditioner.embedders.1.model.ln_final.weight"
_SDXL_REFINER_TE = "conditioner.embedders.0.model.ln_final.weight"
_SD2_TE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
_SD1_TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
_SD1_TE_OLD = "cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight"
_UNET_IN = UNET_PREFIX + "input_blocks.0.0.weight"
_NETWORK_MARKERS = (".lora_down.", ".lora_up.", ".hada_w1_a", ".lokr_w1", ".lora_A.", ".lora_B.", ".oft_")


def detect_family(keys, shape, path="<checkpoint>") -> Family:
    """Pick the family from key names and shapes; refuse what we cannot train with one clear reason.

    `keys` is any iterable of key names, `shape(key)` returns a tensor shape without loading the tensor.
    """
    keys = set(keys)
    if not keys:
        raise CheckpointError(path, "contains no tensors")
    if any(k.startswith(("lora_unet_", "lora_te", "lycoris_")) for k in keys) or any(
        m in k for k in keys for m in _NETWORK_MARKERS
    ):
        raise CheckpointError(path, "is a LoRA/LyCORIS network, not a model checkpoint; choose a checkpoint")
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        if any(k.startswith(("encoder.", "decoder.", VAE_PREFIX)) for k in keys) and not any(
            k.startswith(("cond_stage_model.", "conditioner.")) for k in keys
        ):
            raise CheckpointError(path, "is a VAE, not a model checkpoint; choose it in the VAE list instead")
        if any(k.startswith(("double_blocks.", "joint_blocks.", UNET_PREFIX + "joint_blocks.")) for k in keys):
            raise CheckpointError(path, "is an SD3/Flux-style model; only SD1.x, SD2.x and SDXL are supported")
        raise CheckpointError(path, "is not a Stable Diffusion checkpoint (no model.diffusion_model.* weights)")
    if any(k.startswith((UNET_PREFIX + "joint_blocks.", UNET_PREFIX + "double_blocks.")) for k in keys):
        raise CheckpointError(path, "is an SD3/Flux-style model; only SD1.x, SD2.x and SDXL are supported")
    if _UNET_IN not in keys:
        raise CheckpointError(path, "has an incomplete UNet (no input_blocks.0.0.weight)")
    in_channels = shape(_UNET_IN)[1]

    if _SDXL_TE2 in keys:
        family = SDXL
    elif _SDXL_REFINER_TE in keys:
        raise CheckpointError(path, "is an SDXL refiner; train on an SDXL base model instead")
    elif _SD2_TE in keys:
        family = SD2
    elif _SD1_TE in keys or _SD1_TE_OLD in keys:
        family = SD1
    else:
        raise CheckpointError(path, "has no text encoder weights this trainer recognises (SD1.x, SD2.x, SDXL)")

    if in_channels == 9:
        raise CheckpointError(path, f"is an {family.title} inpainting model; choose a txt2img model")
    if in_channels != 4:
        raise CheckpointError(path, f"is an {family.title} model with {in_channels} input channels "
                                    "(instruct-pix2pix or similar); choose a txt2img model")
    return family
