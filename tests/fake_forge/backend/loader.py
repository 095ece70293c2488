"""Neo backend/loader.py: `forge_loader(sd, additional_state_dicts=None)` — a checkpoint file → the engine object
(`StableDiffusion` / `StableDiffusionXL`), decorated `@torch.inference_mode()` as in Neo, so **every weight is an
inference tensor** (forge-api.md F4.3).

Families (F9): SD1 (`cond_stage_model.transformer.*`) and SDXL base (`conditioner.embedders.0.transformer.*` +
`conditioner.embedders.1.model.*`); anything else — SD2 (`cond_stage_model.model.*`), refiners, SD3/Flux — raises
`ValueError("Failed to recognize model type!")`. Neo tells them by shapes (320 channels, context 768/2048) and would
refuse the project's tiny demo models; the fake tells them by key layout instead. v-prediction: an SDXL file with a
`v_pred` key, or a `<ckpt>.yaml` beside the file whose `model.params.parameterization` is `v`; a `ztsnr` key gives
a zero-terminal-SNR schedule.

Storage (CPU): UNet fp32, text encoders fp16 (the file's tensors as they are), VAE fp32. Text towers: HF
`CLIPTextModel`s; SDXL's OpenCLIP tower is converted (fused `attn.in_proj_*` split into q/k/v, `text_projection`
transposed into a Linear weight). `additional_state_dicts`: VAE files (keys `encoder.*`/`decoder.*`, or already
`first_stage_model.*`) replace the checkpoint's VAE; other files are not faked (ValueError)."""

from __future__ import annotations

import contextlib
import functools
import os
import re

import torch

from backend import memory_management
from backend.utils import load_torch_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE = "cond_stage_model.transformer."
SDXL_TE1 = "conditioner.embedders.0.transformer."
SDXL_TE2 = "conditioner.embedders.1.model."


def under(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def guess_family(state_dict: dict) -> str:
    keys = state_dict.keys()
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise ValueError("Failed to recognize model type!")
    if any(k.startswith(SDXL_TE1) for k in keys) and any(k.startswith(SDXL_TE2) for k in keys):
        return "sdxl"
    if any(k.startswith(SD1_TE) for k in keys):
        return "sd1"
    raise ValueError("Failed to recognize model type!")  # SD2 (OpenCLIP-H, context 1024), refiners, …


# -- tokenizers ---------------------------------------------------------------------------------------------------

def _byte_symbols() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in printable + [b for b in range(256) if b not in printable]]


@functools.lru_cache(maxsize=1)
def _tokenizer_files() -> tuple[str, str]:
    """vocab.json / merges.txt of the CLIP BPE (49408 tokens), from the vocabulary file inside the open_clip_torch
    package (found, not imported; Neo ships its own copy under backend/huggingface)."""
    import gzip
    import importlib.util
    import json
    import tempfile

    spec = importlib.util.find_spec("open_clip")
    folder = next(f for f in (spec.submodule_search_locations if spec else [])
                  if os.path.exists(os.path.join(f, "bpe_simple_vocab_16e6.txt.gz")))
    with gzip.open(os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49408 - 256 - 256 - 2 + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out = tempfile.mkdtemp(prefix="fake-forge-clip-bpe-")
    vocab_file, merges_file = os.path.join(out, "vocab.json"), os.path.join(out, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_token="<|endoftext|>"):
    """An HF CLIPTokenizer: CLIP-L pads with <|endoftext|>, CLIP-G with "!" (id 0)."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(*_tokenizer_files(), pad_token=pad_token)
    tokenizer.model_max_length = 77
    return tokenizer


# -- text towers ----------------------------------------------------------------------------------------------------

def hf_clip_tensors(tensors: dict) -> dict:
    """An HF CLIP-L tower's tensors in the `text_model.*` spelling (position_ids dropped: not persistent)."""
    out = {}
    for key, value in tensors.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key] = value
    return out


_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                    "attn.out_proj": "self_attn.out_proj"}


def open_clip_to_hf(tensors: dict) -> tuple[dict, torch.Tensor | None]:
    """OpenCLIP text-tower tensors → HF `text_model.*` ones (q/k/v split from the fused in_proj; views), plus
    `logit_scale`. `text_projection` ([width, embed]) becomes `text_projection.weight` ([embed, width])."""
    out, logit_scale = {}, None
    for key, value in tensors.items():
        if key == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["text_model.final_layer_norm." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key == "logit_scale":
            logit_scale = value
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", key):
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"text_model.encoder.layers.{m.group(1)}.self_attn.{name}_proj.{m.group(2)}"] = part
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$", key):
            out[f"text_model.encoder.layers.{m.group(1)}.{_OPEN_CLIP_LAYER[m.group(2)]}.{m.group(3)}"] = value
        elif key == "attn_mask":
            continue
        else:
            raise ValueError(f"unexpected OpenCLIP text-encoder key {key!r}")
    return out, logit_scale


def build_clip_tower(tensors: dict, hidden_act: str, logit_scale=None, dtype=torch.float16):
    """An IntegratedCLIP (HF CLIPTextModel + text_projection + logit_scale) holding `tensors` (HF spelling)."""
    import transformers.models.clip.modeling_clip  # noqa: F401 — imported before torch.nn is swapped

    from backend.nn.clip import IntegratedCLIP, text_config
    from backend.operations import using_forge_operations

    width = tensors["text_model.embeddings.token_embedding.weight"].shape[1]
    projection = tensors.get("text_projection.weight")
    config = text_config(tensors, hidden_act, projection.shape[0] if projection is not None else width)
    with using_forge_operations(dtype=dtype), torch.device("meta"):  # no random init: every tensor is replaced
        tower = IntegratedCLIP(config, add_text_projection=True)
    state = {"transformer." + k: v.to(dtype) for k, v in tensors.items()}
    if projection is None:  # CLIP-L files carry no projection: an identity, as a Forge CLIP-L without one
        state["transformer.text_projection.weight"] = torch.eye(width, dtype=dtype)
    state["logit_scale"] = (logit_scale if logit_scale is not None else torch.tensor(4.6052)).to(dtype)
    tower.load_state_dict(state, strict=True, assign=True)
    for module in tower.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:  # non-persistent: position_ids
                assert name == "position_ids", name
                module.register_buffer(name, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
    return tower.eval().requires_grad_(False)


# -- the loader ---------------------------------------------------------------------------------------------------

def _read_yaml(path):
    if not os.path.exists(path):
        return None
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def prediction_type_of(state_dict: dict, family: str, checkpoint_path) -> str:
    if family == "sdxl" and "v_pred" in state_dict:
        return "v_prediction"
    config = _read_yaml(os.path.splitext(str(checkpoint_path))[0] + ".yaml") if checkpoint_path else None
    params = ((config or {}).get("model") or {}).get("params") or {} if isinstance(config, dict) else {}
    if params.get("parameterization") == "v":
        return "v_prediction"
    return "epsilon"


def _replace_vae(state_dict: dict, path) -> None:
    extra = load_torch_file(path, safe_load=True)
    if any(k.startswith(VAE_PREFIX) for k in extra):
        extra = under(extra, VAE_PREFIX)
    if not any(k.startswith(("encoder.", "decoder.")) for k in extra):
        raise ValueError(f"the fake Forge can only add VAE files as additional modules: {path}")
    for key in [k for k in state_dict if k.startswith(VAE_PREFIX)]:
        del state_dict[key]
    state_dict.update({VAE_PREFIX + k: v for k, v in extra.items()})


@contextlib.contextmanager
def _one_thread():
    """Many small fp16 → fp32 copies: torch's thread pool costs far more than it gives on a busy CPU (the fake's
    own speed-up; Neo does not do this)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def forge_loader(sd, additional_state_dicts=None):
    with _one_thread():
        return _forge_loader(sd, additional_state_dicts)


def _forge_loader(sd, additional_state_dicts=None):
    from backend.diffusion_engine.sd15 import StableDiffusion
    from backend.diffusion_engine.sdxl import StableDiffusionXL
    from backend.modules.k_model import KModel
    from backend.modules.k_prediction import Prediction
    from backend.nn.unet import build_unet
    from backend.nn.vae import build_vae
    from backend.patcher.clip import CLIP
    from backend.patcher.unet import UnetPatcher
    from backend.patcher.vae import VAE
    from huggingface_guess import model_list

    checkpoint_path = sd if isinstance(sd, (str, os.PathLike)) else None
    state_dict = load_torch_file(sd, safe_load=True) if checkpoint_path else dict(sd)
    state_dict = dict(state_dict)
    for path in additional_state_dicts or []:
        _replace_vae(state_dict, path)
    family = guess_family(state_dict)
    unet_dtype = memory_management.unet_dtype()
    te_dtype = memory_management.text_encoder_dtype()
    vae_dtype = memory_management.vae_dtype()

    unet_tensors = {k: v.to(unet_dtype) for k, v in under(state_dict, UNET_PREFIX).items()}
    with torch.device("meta"):  # no random init: every tensor is replaced by the file's
        unet = build_unet(unet_tensors, unet_dtype)
    unet.load_state_dict(unet_tensors, strict=True, assign=True)
    unet.storage_dtype = unet_dtype
    unet.computation_dtype = memory_management.get_computation_dtype()
    unet.eval()

    vae_tensors = {k: v.to(vae_dtype) for k, v in under(state_dict, VAE_PREFIX).items()}
    with torch.device("meta"):
        vae_model = build_vae(vae_tensors, vae_dtype, 0.13025 if family == "sdxl" else 0.18215)
    vae_model.load_state_dict(vae_tensors, strict=True, assign=True)
    vae_model.requires_grad_(False)

    prediction = Prediction(prediction_type_of(state_dict, family, checkpoint_path), zsnr="ztsnr" in state_dict)
    if family == "sdxl":
        model_config = model_list.SDXL()
        clip_g_tensors, logit_scale = open_clip_to_hf(under(state_dict, SDXL_TE2))
        towers = {
            "clip_l": build_clip_tower(hf_clip_tensors(under(state_dict, SDXL_TE1)), "quick_gelu", dtype=te_dtype),
            "clip_g": build_clip_tower(clip_g_tensors, "gelu", logit_scale=logit_scale, dtype=te_dtype),
        }
        tokenizers = {"clip_l": clip_tokenizer("<|endoftext|>"), "clip_g": clip_tokenizer("!")}
    else:
        model_config = model_list.SD15()
        towers = {"clip_l": build_clip_tower(hf_clip_tensors(under(state_dict, SD1_TE)), "quick_gelu",
                                             dtype=te_dtype)}
        tokenizers = {"clip_l": clip_tokenizer("<|endoftext|>")}

    k_model = KModel(unet, prediction, config=model_config, storage_dtype=unet_dtype,
                     computation_dtype=unet.computation_dtype)
    unet_patcher = UnetPatcher.from_model(k_model)
    clip = CLIP(model_dict=towers, tokenizer_dict=tokenizers)
    vae = VAE(model=vae_model)
    in_channels = unet_tensors["input_blocks.0.0.weight"].shape[1]
    engine_class = StableDiffusionXL if family == "sdxl" else StableDiffusion
    return engine_class(model_config, unet_patcher, clip, vae, is_inpaint=in_channels == 9)
