"""The model classes behind the webui's `shared.sd_model`, rebuilt from a checkpoint's own keys (not a webui module).

The real ones live in `ldm.models.diffusion.ddpm` / `ldm.modules.encoders.modules` (stable-diffusion-stability-ai),
`sgm.models.diffusion` / `sgm.modules.encoders.modules` (generative-models) and `open_clip.model`; the classes here carry
the same names and attributes (webui-api.md A5) but live in this one file. The UNet and VAE trees are built generically
from the keys under `model.diffusion_model.` / `first_stage_model.` (leaves are real torch layers chosen from each
key's name and shape, containers are `nn.Module` / `nn.ModuleList` so `named_modules()` gives the LDM paths); they
have no forward. The text towers are real: a `transformers.CLIPTextModel` for CLIP-L and an open_clip-shaped tower
with a forward written here.

Before the hijack, `model.state_dict()` has exactly the checkpoint's keys (plus, as in the webui, the schedule
buffers the constructors create when a file lacks them).
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from contextlib import nullcontext
from typing import ClassVar

import torch
from torch import nn

conditioning_calls = []  # test-only: the prompts of every sd_model.get_learned_conditioning(...) call, one list each

SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")
LAYER_NORM_NAME = re.compile(r"^(ln_\w+|final_layer_norm|layer_norm\d*)$")


# -- generic trees (UNet, VAE) -------------------------------------------------------------------------------------

class LDMModule(nn.Module):
    """A container or a non-standard leaf of a tree built from checkpoint keys."""


class UNetModel(LDMModule):
    """ldm/sgm `openaimodel.UNetModel`: the module tree only (input_blocks, middle_block, output_blocks, time_embed,
    out, label_emb for SDXL); no forward."""

    dtype = torch.float32


class AutoencoderKL(LDMModule):
    """ldm `models.autoencoder.AutoencoderKL` (sgm's for SDXL): encoder, decoder, quant_conv, post_quant_conv."""

    def encode(self, x):
        raise NotImplementedError("the fake webui's VAE has no forward (tests/fake_webui/README.md)")

    def decode(self, z):
        raise NotImplementedError("the fake webui's VAE has no forward (tests/fake_webui/README.md)")


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _groups(channels: int) -> int:
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)


def _leaf(tensors: dict, path: list[str]):
    """A real torch layer for a module whose tensors are weight(+bias); None when it is not one."""
    if "weight" not in tensors or not set(tensors) <= {"weight", "bias"}:
        return None
    weight, bias, name = tensors["weight"], "bias" in tensors, path[-1]
    if weight.ndim == 4:
        return nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), padding=weight.shape[2] // 2,
                         bias=bias)
    if weight.ndim == 3:
        return nn.Conv1d(weight.shape[1], weight.shape[0], weight.shape[2], bias=bias)
    if weight.ndim == 2:
        if "embedding" in name and not bias:
            return nn.Embedding(weight.shape[0], weight.shape[1])
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    if weight.ndim == 1 and bias:
        channels = weight.shape[0]
        if "transformer_blocks" in path or LAYER_NORM_NAME.match(name):
            return nn.LayerNorm(channels)
        return nn.GroupNorm(_groups(channels), channels)
    return None


def _make(node: dict, path: list[str], cls=None) -> nn.Module:
    tensors = node.get(None, {})
    children = {k: v for k, v in node.items() if k is not None}
    module = _leaf(tensors, path) if tensors and cls is None else None
    if module is None and cls is None and not tensors and children and all(k.isdigit() for k in children):
        # nn.Sequential / nn.ModuleList positions without weights (SiLU, Dropout, …) are kept as Identity
        module = nn.ModuleList([nn.Identity() for _ in range(max(int(k) for k in children) + 1)])
        for key, child in children.items():
            module[int(key)] = _make(child, path + [key])
        return module
    if module is None:
        module = (cls or LDMModule)()
        for name, tensor in tensors.items():
            if name in ("weight", "bias") or tensor.is_floating_point() and tensor.ndim > 0:
                module.register_parameter(name, nn.Parameter(torch.empty(tensor.shape, dtype=torch.float32)))
            else:
                module.register_buffer(name, torch.zeros(tensor.shape, dtype=tensor.dtype))
    for key in sorted(children, key=_natural):
        module.add_module(key, _make(children[key], path + [key]))
    return module


def build_tree(tensors: dict, cls=LDMModule) -> nn.Module:
    """A module tree whose `state_dict()` keys are exactly `tensors`' keys (relative to the tree root)."""
    trie: dict = {}
    for key, tensor in tensors.items():
        *path, name = key.split(".")
        node = trie
        for segment in path:
            node = node.setdefault(segment, {})
        node.setdefault(None, {})[name] = tensor
    return _make(trie, [], cls)


def under(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# -- schedules --------------------------------------------------------------------------------------------------------

def scaled_linear_alphas_cumprod(linear_start=0.00085, linear_end=0.012, timesteps=1000) -> torch.Tensor:
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0), betas


def register_schedule(model: nn.Module, linear_start, linear_end, timesteps):
    """ldm DDPM.register_schedule (v_posterior 0): the 12 float32 buffers an SD1/SD2 checkpoint carries."""
    alphas_cumprod, betas = scaled_linear_alphas_cumprod(linear_start, linear_end, timesteps)
    alphas = 1.0 - betas
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    values = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
    }
    for name in SCHEDULE_BUFFERS:
        model.register_buffer(name, values[name].to(torch.float32))


def _extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device)[t.to(like.device)].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


# -- text towers --------------------------------------------------------------------------------------------------

def _byte_symbols() -> list[str]:
    """CLIP's byte → printable-character table, in vocabulary order (printable bytes first)."""
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
def clip_tokenizer():
    """The CLIP BPE tokenizer every SD text tower uses (49408 tokens; pads with <|endoftext|>), built once per
    process from the vocabulary file inside the open_clip_torch package (found, not imported)."""
    import gzip
    import importlib.util
    import json
    import os
    import tempfile

    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")
    folder = next(f for f in (spec.submodule_search_locations if spec else [])
                  if os.path.exists(os.path.join(f, "bpe_simple_vocab_16e6.txt.gz")))
    with gzip.open(os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49408 - 256 - 256 - 2 + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out = tempfile.mkdtemp(prefix="fake-webui-clip-bpe-")
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(os.path.join(out, "vocab.json"), os.path.join(out, "merges.txt"),
                              pad_token="<|endoftext|>")
    tokenizer.model_max_length = 77
    return tokenizer


def _count(tensors: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in tensors for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


class CLIPTextModelLevel(nn.Module):
    """transformers ≥ 5 flattened `CLIPTextModel` (no `.text_model` level; the webui's pinned 4.30.2 has one): this
    puts the level back so module paths and keys stay `transformer.text_model.…`. `.text_model` is the real (flat)
    CLIPTextModel; calling this calls it."""

    def __init__(self, text_model):
        super().__init__()
        self.text_model = text_model
        self.config = text_model.config

    def forward(self, *args, **kwargs):
        return self.text_model(*args, **kwargs)

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    @property
    def dtype(self):
        return self.text_model.dtype

    @property
    def device(self):
        return self.text_model.device


def make_clip_text_model(tensors: dict) -> nn.Module:
    """A real transformers CLIPTextModel sized from `text_model.*` tensors (CLIP-L layout); module paths
    `text_model.embeddings…` in every transformers version; `position_ids` is a persistent buffer as in 4.30."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, width = tensors["text_model.embeddings.token_embedding.weight"].shape
    config = CLIPTextConfig(
        vocab_size=vocab, hidden_size=width,
        intermediate_size=tensors["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(tensors, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=tensors["text_model.embeddings.position_embedding.weight"].shape[0],
        projection_dim=width, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )
    model = CLIPTextModel(config)
    if not hasattr(model, "text_model"):
        model = CLIPTextModelLevel(model)
    embeddings = model.text_model.embeddings
    embeddings._non_persistent_buffers_set.discard("position_ids")
    return model.eval()


class ResidualAttentionBlock(nn.Module):
    """open_clip.transformer.ResidualAttentionBlock (pre-LN, nn.MultiheadAttention, GELU MLP)."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ls_1 = nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, mlp_width)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(mlp_width, width))]))
        self.ls_2 = nn.Identity()

    def forward(self, x, attn_mask=None):
        y = self.ln_1(x)
        x = x + self.ls_1(self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """open_clip.transformer.Transformer: `resblocks`, sequence-first (L, B, D)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int):
        super().__init__()
        self.width, self.layers, self.grad_checkpointing = width, layers, False
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_width) for _ in range(layers)])


class CLIP(nn.Module):
    """open_clip.model.CLIP with `visual` deleted, as ldm/sgm keep it: the text tower."""

    def __init__(self, vocab: int, width: int, context_length: int, layers: int, mlp_width: int, embed_dim: int):
        super().__init__()
        self.context_length, self.vocab_size = context_length, vocab
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, max(1, width // 64), mlp_width)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    @classmethod
    def from_tensors(cls, tensors: dict) -> CLIP:
        vocab, width = tensors["token_embedding.weight"].shape
        return cls(vocab, width, tensors["positional_embedding"].shape[0],
                   _count(tensors, r"transformer\.resblocks\.(\d+)\."),
                   tensors["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                   tensors["text_projection"].shape[1] if "text_projection" in tensors else width)

    def embed(self, tokens):
        return (self.token_embedding(tokens) + self.positional_embedding).permute(1, 0, 2)  # NLD -> LND


class AbstractEmbModel(nn.Module):
    """sgm.modules.encoders.modules.AbstractEmbModel: `is_trainable`, `ucg_rate`, `input_key`, `legacy_ucg_val`."""

    def __init__(self, input_key="txt", is_trainable=False):
        super().__init__()
        self.is_trainable, self.ucg_rate, self.input_key, self.legacy_ucg_val = is_trainable, 0.0, input_key, None


class FrozenCLIPEmbedder(AbstractEmbModel):
    """ldm/sgm `FrozenCLIPEmbedder`: `.transformer` (HF CLIPTextModel), `.tokenizer` (HF CLIPTokenizer), `.layer`
    ("last" for SD1, "hidden" with `layer_idx` 11 for SDXL's CLIP-L), `max_length` 77."""

    def __init__(self, transformer, tokenizer, layer="last", layer_idx=None, max_length=77):
        super().__init__()
        self.transformer, self.tokenizer = transformer, tokenizer
        self.layer, self.layer_idx, self.max_length = layer, layer_idx, max_length
        self.return_pooled = False

    def hidden_layer(self, hidden_states):
        """`hidden_states[layer_idx]`; a tower with fewer layers than `layer_idx` (a tiny test model) gets its
        penultimate one, which is what layer 11 of the 12-layer CLIP-L is."""
        return hidden_states[self.layer_idx] if self.layer_idx < len(hidden_states) else hidden_states[-2]

    def forward(self, text):
        tokens = self.tokenizer(list(text), truncation=True, max_length=self.max_length, padding="max_length",
                                return_tensors="pt")["input_ids"].to(self.transformer.device)
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        return outputs.last_hidden_state if self.layer == "last" else self.hidden_layer(outputs.hidden_states)

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder(AbstractEmbModel):
    """ldm `FrozenOpenCLIPEmbedder` (SD2): `.model` (open_clip CLIP text tower), layer "penultimate" → the blocks
    up to the last one, then `ln_final`."""

    def __init__(self, model, layer="penultimate", max_length=77):
        super().__init__()
        self.model, self.layer, self.max_length = model, layer, max_length
        self.layer_idx = 0 if layer == "last" else 1

    def text_transformer_forward(self, x, attn_mask=None):
        blocks = self.model.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - self.layer_idx:
                break
            x = block(x, attn_mask=attn_mask)
        return x

    def encode_with_transformer(self, tokens):
        x = self.text_transformer_forward(self.model.embed(tokens), attn_mask=self.model.attn_mask)
        return self.model.ln_final(x.permute(1, 0, 2))

    def forward(self, text):
        return self.encode_with_transformer(open_clip_tokenize(text, self.model.token_embedding.weight.device))

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    """sgm `FrozenOpenCLIPEmbedder2` (SDXL's bigG): `encode_with_transformer` gives {"penultimate", "last",
    "pooled"}; pooled = ln_final(last) at the EOS token @ text_projection; legacy False, always_return_pooled."""

    def __init__(self, model, layer="penultimate", always_return_pooled=True, legacy=False, max_length=77):
        super().__init__()
        self.model, self.layer, self.max_length = model, layer, max_length
        self.layer_idx = 0 if layer == "last" else 1
        self.return_pooled, self.legacy = always_return_pooled, legacy

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        blocks = self.model.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)
            x = block(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs

    def pool(self, x, tokens):
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.model.text_projection

    def encode_with_transformer(self, tokens):
        outputs = self.text_transformer_forward(self.model.embed(tokens), attn_mask=self.model.attn_mask)
        outputs["pooled"] = self.pool(self.model.ln_final(outputs["last"]), tokens)
        return outputs

    def forward(self, text):
        outputs = self.encode_with_transformer(open_clip_tokenize(text, self.model.token_embedding.weight.device))
        z = outputs[self.layer]
        return (z, outputs["pooled"]) if self.return_pooled else z


def open_clip_tokenize(texts, device, context_length=77):
    """open_clip.tokenize: [SOT] tokens [EOT], truncated to 77, padded with 0."""
    tokenizer = clip_tokenizer()
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"][:context_length - 2]
        ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        rows.append(ids + [0] * (context_length - len(ids)))
    return torch.tensor(rows, device=device)


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1) if dim % 2 else embedding


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """sgm size/crop embedder: each value → a `outdim`-wide sinusoidal embedding, concatenated. No parameters."""

    def __init__(self, outdim=256, input_key="original_size_as_tuple"):
        super().__init__(input_key=input_key)
        self.outdim = outdim

    def forward(self, x):
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        return timestep_embedding(x.reshape(-1), self.outdim).reshape(b, dims * self.outdim)


class GeneralConditioner(nn.Module):
    """sgm.modules.GeneralConditioner: runs each embedder on `batch[embedder.input_key]` (under torch.no_grad when
    the embedder is not trainable, as sgm does) and concatenates 3-D outputs as "crossattn", 2-D as "vector"."""

    OUTPUT_DIM2KEYS: ClassVar[dict] = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM: ClassVar[dict] = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, embedders):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch, force_zero_embeddings=None):
        output = {}
        force_zero_embeddings = force_zero_embeddings or []
        for embedder in self.embedders:
            context = nullcontext if getattr(embedder, "is_trainable", False) else torch.no_grad
            with context():
                emb_out = embedder(batch[embedder.input_key])
            for emb in emb_out if isinstance(emb_out, (list, tuple)) else [emb_out]:
                key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                output[key] = torch.cat((output[key], emb), self.KEY2CATDIM[key]) if key in output else emb
        return output


# -- the models ---------------------------------------------------------------------------------------------------

class DiffusionWrapper(nn.Module):
    """ldm DiffusionWrapper: `.diffusion_model`, `conditioning_key` "crossattn"."""

    def __init__(self, diffusion_model, conditioning_key="crossattn"):
        super().__init__()
        self.diffusion_model, self.conditioning_key = diffusion_model, conditioning_key


class OpenAIWrapper(nn.Module):
    """sgm IdentityWrapper/OpenAIWrapper: `.diffusion_model`."""

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model


class LatentDiffusion(nn.Module):
    """ldm.models.diffusion.ddpm.LatentDiffusion (SD1, SD2): model (DiffusionWrapper), first_stage_model,
    cond_stage_model, the schedule buffers, `parameterization`, `scale_factor`; `q_sample` / `get_v`.
    `encode_first_stage`, `decode_first_stage` and `apply_model` are not faked."""

    def __init__(self, unet, vae, cond_stage_model, params: dict):
        super().__init__()
        self.model = DiffusionWrapper(unet)
        self.first_stage_model = vae
        self.cond_stage_model = cond_stage_model
        self.parameterization = params.get("parameterization", "eps")
        self.scale_factor = float(params.get("scale_factor", 0.18215))
        self.num_timesteps = int(params.get("timesteps", 1000))
        self.linear_start = float(params.get("linear_start", 0.00085))
        self.linear_end = float(params.get("linear_end", 0.012))
        self.channels = int(params.get("channels", 4))
        self.image_size = params.get("image_size", 64)
        self.cond_stage_key = params.get("cond_stage_key", "txt")
        self.conditioning_key = params.get("conditioning_key", "crossattn")
        self.cond_stage_trainable = False
        self.cond_stage_forward = None
        register_schedule(self, self.linear_start, self.linear_end, self.num_timesteps)
        self.logvar = torch.zeros(self.num_timesteps)

    def get_learned_conditioning(self, c):
        conditioning_calls.append(list(c))
        return self.cond_stage_model(c)

    def get_first_stage_encoding(self, encoder_posterior):
        z = encoder_posterior.sample() if hasattr(encoder_posterior, "sample") else encoder_posterior
        return self.scale_factor * z

    def q_sample(self, x_start, t, noise=None):
        noise = torch.randn_like(x_start) if noise is None else noise
        return (_extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def get_v(self, x, noise, t):
        return (_extract(self.sqrt_alphas_cumprod, t, x) * noise
                - _extract(self.sqrt_one_minus_alphas_cumprod, t, x) * x)


class EpsScaling:
    """sgm denoiser_scaling.EpsScaling"""


class VScaling:
    """sgm denoiser_scaling.VScaling"""


class DiscreteDenoiser(nn.Module):
    """sgm DiscreteDenoiser: the `sigmas` buffer and the `scaling` that tells eps from v."""

    def __init__(self, scaling, linear_start=0.00085, linear_end=0.012, num_idx=1000):
        super().__init__()
        self.scaling = scaling
        alphas_cumprod, _ = scaled_linear_alphas_cumprod(linear_start, linear_end, num_idx)
        self.register_buffer("sigmas", ((1 - alphas_cumprod) / alphas_cumprod).sqrt().to(torch.float32))


class DiffusionEngine(nn.Module):
    """sgm.models.diffusion.DiffusionEngine (SDXL): model (OpenAIWrapper), conditioner, first_stage_model,
    denoiser, `scale_factor`. `get_learned_conditioning` is the webui's patch (modules/sd_models_xl.py)."""

    def __init__(self, unet, vae, conditioner, denoiser, params: dict):
        super().__init__()
        self.model = OpenAIWrapper(unet)
        self.denoiser = denoiser
        self.conditioner = conditioner
        self.first_stage_model = vae
        self.scale_factor = float(params.get("scale_factor", 0.13025))
        self.input_key = "jpg"


# -- building a model from a state dict ---------------------------------------------------------------------------

def family_of(state_dict: dict) -> str:
    if any(k.startswith("conditioner.embedders.") for k in state_dict):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in state_dict):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in state_dict):
        return "sd1"
    raise ValueError("not an SD1/SD2/SDXL checkpoint: no cond_stage_model.transformer., cond_stage_model.model. "
                     "or conditioner.embedders. keys")


def _target(config) -> str:
    return (config or {}).get("target", "") if isinstance(config, dict) else ""


def build_model(state_dict: dict, config: dict | None) -> nn.Module:
    """An unhijacked model shaped like `state_dict` (random weights; the caller loads them). `config` is the parsed
    `.yaml` (or None)."""
    family = family_of(state_dict)
    params = ((config or {}).get("model") or {}).get("params") or {}
    unet = build_tree(under(state_dict, "model.diffusion_model."), UNetModel)
    vae = build_tree(under(state_dict, "first_stage_model."), AutoencoderKL)
    vae.add_module("loss", nn.Identity())
    if family == "sdxl":
        return _build_sdxl(state_dict, params, unet, vae)
    if family == "sd1":
        text = make_clip_text_model(under(state_dict, "cond_stage_model.transformer."))
        cond = FrozenCLIPEmbedder(text, clip_tokenizer(), layer="last")
    else:
        cond_params = (params.get("cond_stage_config") or {}).get("params") or {}
        tower = CLIP.from_tensors(under(state_dict, "cond_stage_model.model."))
        cond = FrozenOpenCLIPEmbedder(tower, layer=cond_params.get("layer", "penultimate"))
    return LatentDiffusion(unet, vae, cond, params)


def _build_sdxl(state_dict, params, unet, vae):
    emb_models = ((params.get("conditioner_config") or {}).get("params") or {}).get("emb_models") or []
    by_target = {}
    for i, emb in enumerate(emb_models):
        by_target.setdefault(_target(emb).rsplit(".", 1)[-1], []).append((i, emb.get("params") or {}, emb))
    clip_l = (by_target.get("FrozenCLIPEmbedder") or [(0, {"layer": "hidden", "layer_idx": 11}, {})])[0][1]
    clip_g = (by_target.get("FrozenOpenCLIPEmbedder2") or [(1, {}, {})])[0][1]
    text_l = make_clip_text_model(under(state_dict, "conditioner.embedders.0.transformer."))
    tower_g = CLIP.from_tensors(under(state_dict, "conditioner.embedders.1.model."))
    embedders = [
        FrozenCLIPEmbedder(text_l, clip_tokenizer(), layer=clip_l.get("layer", "hidden"),
                           layer_idx=clip_l.get("layer_idx", 11)),
        FrozenOpenCLIPEmbedder2(tower_g, layer=clip_g.get("layer", "penultimate"),
                                always_return_pooled=clip_g.get("always_return_pooled", True),
                                legacy=clip_g.get("legacy", False)),
    ]
    adm = state_dict["model.diffusion_model.label_emb.0.0.weight"].shape[1]
    pooled = tower_g.text_projection.shape[1]
    sizes = by_target.get("ConcatTimestepEmbedderND") or [
        (i, {"outdim": (adm - pooled) // 6}, {"input_key": key})
        for i, key in enumerate(("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple"), 2)]
    for _, emb_params, emb in sizes:
        embedders.append(ConcatTimestepEmbedderND(emb_params.get("outdim", 256), emb.get("input_key")))
    denoiser_config = params.get("denoiser_config") or {}
    scaling = _target((denoiser_config.get("params") or {}).get("scaling_config"))
    denoiser = DiscreteDenoiser(VScaling() if scaling.endswith("VScaling") else EpsScaling())
    return DiffusionEngine(unet, vae, GeneralConditioner(embedders), denoiser, params)
