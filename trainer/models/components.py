"""Checkpoint file → trainable components (UNet, text encoder(s), VAE, tokenizer(s), DDPM schedule), offline.

Each tensor is read once, cast to its final dtype as it is read, and assigned into a model built on the meta
device, so loading never holds two copies of a component.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import CheckpointError
from . import ldm_config, prediction
from .checkpoint import StateDict, open_state_dict
from .devices import compute_dtype
from .family import UNET_PREFIX, Family, TextEncoderSpec, detect_family
from .tokenizer import clip_tokenizer

log = logging.getLogger(__name__)

UNET_INPUT_KEY = UNET_PREFIX + "input_blocks.0.0.weight"
# Buffers that models rebuild themselves and that files may or may not carry.
_OPTIONAL_KEYS = re.compile(r"(^|\.)position_ids$")


@dataclass
class Components:
    family: Family
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    text_encoders: list[torch.nn.Module]
    tokenizers: list
    noise_scheduler: object
    is_v_prediction: bool
    v_prediction_source: str
    dtype: torch.dtype
    source: str
    config_source: str
    load_seconds: float = 0.0
    metadata: dict = field(default_factory=dict)
    # The host's own conditioning for prompts (iLECO / Difference / ADDifT): texts → (hidden, pooled), or None
    # for the trainer's text path. Captions always use the trainer's path.
    prompt_encoder: Callable[[list[str]], tuple] | None = None
    notes: list[str] = field(default_factory=list)  # what the host decided that the user should read

    @property
    def resolution(self) -> int:
        return self.family.v_resolution if self.is_v_prediction else self.family.resolution

    def summary(self) -> str:
        def count(m):
            return sum(p.numel() for p in m.parameters()) if m is not None else 0

        tes = ", ".join(f"{type(t).__name__} {count(t) / 1e6:.2f}M" for t in self.text_encoders)
        return "\n".join(
            [
                f"model:       {self.source}",
                f"family:      {self.family.title} ({self.family.model_version}), "
                f"{'v-prediction' if self.is_v_prediction else 'eps-prediction'} (from {self.v_prediction_source})",
                f"config:      {self.config_source}",
                f"UNet:        {count(self.unet) / 1e6:.2f}M parameters, cross-attention "
                f"{self.unet.config.cross_attention_dim}, blocks {list(self.unet.config.block_out_channels)}",
                f"text:        {tes}",
                f"VAE:         {count(self.vae) / 1e6:.2f}M parameters, scale {self.family.vae_scale}",
                f"dtype:       {str(self.dtype).replace('torch.', '')}",
                f"resolution:  {self.resolution}",
                f"loaded in:   {self.load_seconds:.2f} s",
            ]
        )


def load_components(
    path: str | Path,
    dtype: torch.dtype | None = torch.float32,
    device: torch.device | str = "cpu",
    vae_dtype: torch.dtype | None = None,
    v_prediction: bool | None = None,
    with_vae: bool = True,
    with_text_encoders: bool = True,
    vae_file: str | Path | None = None,
) -> Components:
    """Read `path` (safetensors / ckpt / pt) and build diffusers/transformers components on CPU.

    `dtype` is the compute dtype asked for (None: as stored in the file); on CPU fp16 becomes fp32 (see
    devices.compute_dtype). `v_prediction` None means detect it (sidecar yaml, metadata, marker tensor, SD2
    test forward). `vae_file` replaces the checkpoint's own VAE.
    """
    started = time.perf_counter()
    path = Path(path)
    device = torch.device(device)
    with open_state_dict(path) as sd:
        if dtype is None:
            dtype = sd.stored_dtype(UNET_INPUT_KEY)
        dtype = compute_dtype(device, dtype)
        components = build_components(sd, path, dtype, compute_dtype(device, vae_dtype or dtype), v_prediction,
                                      with_vae=with_vae and vae_file is None, with_text_encoders=with_text_encoders)
    if with_vae and vae_file is not None:
        components.vae = load_vae_file(vae_file, ldm_config.load_ldm_config(components.family, path)[0],
                                       components.family, compute_dtype(device, vae_dtype or dtype))
    components.load_seconds = time.perf_counter() - started
    return components


def build_components(sd: StateDict, path: Path, dtype: torch.dtype | None, vae_dtype: torch.dtype | None,
                     v_prediction: bool | None, with_vae: bool = True, with_text_encoders: bool = True,
                     v_prediction_source: str = "the model_v_pred setting") -> Components:
    """Components from LDM-keyed tensors: each is cast once (`dtype` for the UNet and text encoders, `vae_dtype`
    for the VAE; None keeps the dtype it has) and assigned, never copied otherwise — the conversions to diffusers
    and transformers names keep views, so tensors already in memory (the webui's model) are shared, not doubled.
    `path` names the checkpoint (its `.yaml` sidecar is read; the file itself is not)."""
    started = time.perf_counter()
    path = Path(path)
    family = detect_family(sd.keys(), sd.shape, path)
    config, config_source = ldm_config.load_ldm_config(family, path)
    config_is_sidecar = not config_source.startswith("shipped")
    try:
        sd.dtype = dtype
        unet = build_unet(sd, config, family)
        text_encoders, tokenizers = [], []
        if with_text_encoders:
            for spec in family.text_encoders:
                text_encoders.append(build_text_encoder(sd, spec))
                tokenizers.append(clip_tokenizer(spec.pad_token))
        vae = None
        if with_vae:
            sd.dtype = vae_dtype
            vae = build_vae(sd, config, family)
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(path, f"does not match its {family.title} config ({_short(err)})") from None
    if v_prediction is None:
        is_v, why = prediction.resolve_v_prediction(None, family, config, config_is_sidecar, sd.metadata, sd, unet)
    else:
        is_v, why = bool(v_prediction), v_prediction_source
    return Components(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=ddpm_scheduler(config, is_v),
        is_v_prediction=is_v,
        v_prediction_source=why,
        dtype=next(unet.parameters()).dtype,
        source=str(path),
        config_source=config_source,
        load_seconds=time.perf_counter() - started,
        metadata=dict(sd.metadata),
    )


def ddpm_scheduler(config: dict, is_v_prediction: bool):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        **ldm_config.noise_schedule(config),
        beta_schedule="scaled_linear",
        prediction_type="v_prediction" if is_v_prediction else "epsilon",
        clip_sample=False,
    )


def build_unet(sd: StateDict, config: dict, family: Family):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet_cfg = ldm_config.unet_config(config, family, sd)
    state = convert_ldm_unet_checkpoint(sd, unet_cfg)
    return materialize(lambda: UNet2DConditionModel(**unet_cfg), state, "UNet", sd.path)


def build_vae(sd: StateDict, config: dict, family: Family):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae_cfg = ldm_config.vae_config(config, family, sd)
    state = convert_ldm_vae_checkpoint(sd, vae_cfg)
    return materialize(lambda: AutoencoderKL(**vae_cfg), state, "VAE", sd.path)


def load_vae_file(path: str | Path, config: dict, family: Family, dtype: torch.dtype):
    """A separate VAE file (LDM keys, with or without `first_stage_model.`), built with the model's VAE config."""
    path = Path(path)
    with open_state_dict(path, dtype) as sd:
        if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.", "vae.")) for k in sd.keys()):
            raise CheckpointError(path, "is not a VAE (no encoder/decoder weights)")
        try:
            return build_vae(sd, config, family)
        except CheckpointError:
            raise
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(path, f"does not fit this {family.title} model's VAE ({_short(err)})") from None


def build_text_encoder(sd: StateDict, spec: TextEncoderSpec):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg = ldm_config.text_encoder_config(spec, sd.keys(), sd.shape, sd.path)
    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    state = text_encoder_state(sd, spec, cfg)

    def make():
        return cls(cfg)

    with torch.device("meta"):
        skeleton = make()
    state = to_model_keys(state, skeleton.state_dict().keys(), sd.path)
    return materialize(make, state, f"text encoder {spec.prefix}", sd.path, skeleton=skeleton)


def text_encoder_state(sd: StateDict, spec: TextEncoderSpec, cfg) -> dict:
    """LDM text-tower keys → transformers keys in the `text_model.*` spelling (mapped per model later)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    p = spec.prefix
    if spec.kind == "hf_clip":
        state = {}
        for key in sd.keys():
            if not key.startswith(p):
                continue
            local = key[len(p):]
            if not local.startswith("text_model."):  # very old transformers wrote no text_model level
                local = "text_model." + local
            state[local] = sd[key]
        return state

    dropped = _last_block_keys(sd.keys(), p, cfg.num_hidden_layers) if spec.drop_last_block else set()
    fused = [k for k in sd.keys() if k.startswith(p + "transformer.resblocks.") and k not in dropped
             and k.endswith((".attn.in_proj_weight", ".attn.in_proj_bias"))]
    projection = p + "text_projection"
    # diffusers copies the fused q/k/v and the transposed projection; we hand it the rest and add those as views
    view = _WithoutKeys(sd, dropped | set(fused) | {projection})

    class _Config:  # convert_open_clip_checkpoint reads only config.hidden_size
        config = cfg

    state = convert_open_clip_checkpoint(_Config, view, prefix=p)
    for key in fused:
        layer = key[len(p + "transformer.resblocks."):].split(".", 1)[0]
        kind = "weight" if key.endswith("weight") else "bias"
        for name, part in zip("qkv", sd[key].chunk(3, dim=0)):  # views of the fused tensor
            state[f"text_model.encoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = part
    if spec.with_projection and projection in sd:
        state["text_projection.weight"] = sd[projection].T  # a view: the webui's tensor is not copied
    return state


def _last_block_keys(keys, prefix: str, kept_layers: int) -> set[str]:
    marker = f"{prefix}transformer.resblocks.{kept_layers}."
    return {k for k in keys if k.startswith(marker)}


def to_model_keys(state: dict, model_keys, path) -> dict:
    """Map `text_model.X` to whatever the installed transformers calls it: `text_model.X` or `X`.

    transformers ≥ 5.6 flattened CLIPTextModel (no `text_model.` level); CLIPTextModelWithProjection kept it.
    Each key is checked against the model's own names — nothing is left to chance.
    """
    model_keys = set(model_keys)
    mapped = {}
    for key, value in state.items():
        if key in model_keys:
            mapped[key] = value
        elif key.startswith("text_model.") and key[len("text_model."):] in model_keys:
            mapped[key[len("text_model."):]] = value
        elif _OPTIONAL_KEYS.search(key):
            continue
        else:
            raise CheckpointError(path, f"text encoder has an unexpected tensor {key!r}")
    return mapped


def materialize(make, state: dict, what: str, path, skeleton=None):
    """Build `make()` on the meta device and assign `state` into it: no second copy of the weights."""
    if skeleton is None:
        with torch.device("meta"):
            skeleton = make()
    expected = skeleton.state_dict().keys()
    missing = [k for k in expected if k not in state and not _OPTIONAL_KEYS.search(k)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(path, f"{what} does not match its config ({detail})")
    skeleton.load_state_dict(state, strict=False, assign=True)
    _rebuild_meta_buffers(skeleton, what, path)
    skeleton.eval().requires_grad_(False)
    return skeleton


def _rebuild_meta_buffers(model: torch.nn.Module, what: str, path) -> None:
    for module_name, module in model.named_modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":
                # Keep the buffer's own persistence: transformers < 4.31 saves position_ids in state_dict(),
                # later releases do not.
                persistent = name not in module._non_persistent_buffers_set
                module.register_buffer(
                    name, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=persistent
                )
            else:
                raise CheckpointError(path, f"{what} has no value for buffer {module_name}.{name}")
    for name, param in model.named_parameters():
        if param.is_meta:
            raise CheckpointError(path, f"{what} has no value for {name}")


class _WithoutKeys:
    """A read-only view of a StateDict that hides some keys (the SD2 tower's unused last block)."""

    def __init__(self, sd: StateDict, hidden):
        self._sd = sd
        self._hidden = set(hidden)

    def keys(self):
        return [k for k in self._sd.keys() if k not in self._hidden]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key):
        return key not in self._hidden and key in self._sd

    def __getitem__(self, key):
        if key in self._hidden:
            raise KeyError(key)
        return self._sd[key]

    def get(self, key, default=None):
        return self[key] if key in self else default


def _short(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
