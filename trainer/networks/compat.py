"""Would the A1111 webui, ComfyUI and Forge match every key of a LoRA file? Their loaders' name rules, reimplemented.

Unmatched keys are only logged by both loaders, which is why a broken file shows up as "my LoRA has no effect".
Each rule set needs the names of the model's layers; they are derived from its LDM key layout:

- A1111 (extensions-builtin/Lora): layer names are the model's module paths with `.` → `_` (`diffusion_model_…`,
  SD1 `transformer_text_model_…`, SD2 `model_transformer_resblocks_…`, SDXL `0_transformer_text_model_…` /
  `1_model_transformer_resblocks_…`). A file's name is converted from diffusers/kohya spelling to that form, with
  fallbacks for q/k/v into an OpenCLIP MultiheadAttention, `lora_unet`→`diffusion_model` and `lora_te1_text_model`.
  q/k/v into a MultiheadAttention take effect only when q, k, v and out_proj are all present.
- ComfyUI (comfy/lora.py): `lora_unet_` + LDM name or + diffusers name of any UNet weight; `lora_te_` (SD1, SD2),
  `lora_te1_` / `lora_te2_` (SDXL) + `text_model_encoder_layers_<i>_<q/k/v/out_proj/fc1/fc2>` for existing layers.
- Forge Neo and Classic (forge-api.md F6): ComfyUI's key maps (Neo ships comfy/lora.py; Classic its ldm_patched
  copy), plus SD1's `lora_te1_` spelling for the CLIP tower; q/k/v map one by one (no all-four rule). Classic knows
  fewer adapter parts (no DoRA), so a key must be known to both. Neo drops a file whose unmatched keys exceed half
  of it and applies the rest of a file below that silently; Classic drops one with more than 12 — the self-check
  demands none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..models import ldm_writer
from ..models.family import UNET_PREFIX, Family

KNOWN_PARTS = {
    "lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
}
FORGE_CLASSIC_PARTS = KNOWN_PARTS - {"dora_scale"}  # ldm_patched's loader has no DoRA (forge-api.md F6)
CLIP_LAYER_PARTS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj",
                    "self_attn_out_proj")
_RESNET_SUFFIX = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
                  "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}
_WEBUI_PREFIXES = ("model.", "cond_stage_model.", "conditioner.embedders.")


@dataclass(frozen=True)
class ModelNames:
    """The layer names each loader knows for one model."""

    family: Family
    webui: frozenset[str]
    comfyui: frozenset[str]
    source: str

    @property
    def forge(self) -> frozenset[str]:
        """Forge's names: ComfyUI's, and for SD1 the CLIP tower under `lora_te1_` too."""
        if self.family.is_sdxl:
            return self.comfyui
        return self.comfyui | {"lora_te1_" + n[len("lora_te_"):] for n in self.comfyui if n.startswith("lora_te_")}


@dataclass
class CompatReport:
    a1111_unmatched: list[str] = field(default_factory=list)
    comfyui_unmatched: list[str] = field(default_factory=list)
    a1111_ineffective: list[str] = field(default_factory=list)  # matched, but the webui would apply nothing
    forge_unmatched: list[str] = field(default_factory=list)  # under Forge Neo's or Classic's rules

    @property
    def ok(self) -> bool:
        return not (self.a1111_unmatched or self.comfyui_unmatched or self.a1111_ineffective or self.forge_unmatched)

    @property
    def problems(self) -> list[str]:
        return sorted({*self.a1111_unmatched, *self.comfyui_unmatched, *self.forge_unmatched}) + self.a1111_ineffective

    def as_dict(self) -> dict:
        return {"a1111": self.a1111_unmatched, "comfyui": self.comfyui_unmatched,
                "a1111_ineffective": self.a1111_ineffective, "forge": self.forge_unmatched}


# -- names of a model ------------------------------------------------------------------------------------------
def webui_layer_names(ldm_keys) -> set[str]:
    names = set()
    for key in ldm_keys:
        module = key.rsplit(".", 1)[0]
        for prefix in _WEBUI_PREFIXES:
            if module.startswith(prefix):
                names.add(module[len(prefix):].replace(".", "_"))
                break
    return names


def comfyui_lora_names(family: Family, ldm_keys, diffusers_unet_keys) -> set[str]:
    names = set()
    for key in ldm_keys:
        if key.startswith(UNET_PREFIX) and key.endswith(".weight"):
            names.add("lora_unet_" + key[len(UNET_PREFIX):-len(".weight")].replace(".", "_"))
    for key in diffusers_unet_keys:
        if key.endswith(".weight"):
            names.add("lora_unet_" + key[:-len(".weight")].replace(".", "_"))
    prefixes = ("lora_te1", "lora_te2") if family.is_sdxl else ("lora_te",)
    for prefix, spec in zip(prefixes, family.text_encoders):
        pattern = (r"text_model\.encoder\.layers\.(\d+)\." if spec.kind == "hf_clip"
                   else r"transformer\.resblocks\.(\d+)\.")
        layers = {int(m.group(1)) for k in ldm_keys if k.startswith(spec.prefix)
                  and (m := re.match(re.escape(spec.prefix) + pattern, k))}
        for layer in layers:
            for part in CLIP_LAYER_PARTS:
                names.add(f"{prefix}_text_model_encoder_layers_{layer}_{part}")
    return names


def names_from_components(family: Family, unet, text_encoders, source="the loaded model") -> ModelNames:
    """Layer names of in-memory components (their LDM names computed on meta tensors: no copies)."""

    def meta(state):
        return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}

    unet_state = meta(unet.state_dict())
    ldm = set(ldm_writer.unet_to_ldm(unet_state, unet.config))
    for spec, te in zip(family.text_encoders, text_encoders):
        state = meta(te.state_dict())
        if spec.kind == "hf_clip":
            ldm |= set(ldm_writer.hf_clip_to_ldm(state, spec))
        else:
            ldm |= set(ldm_writer.open_clip_to_ldm(state, spec))
    return ModelNames(family, frozenset(webui_layer_names(ldm)), frozenset(comfyui_lora_names(family, ldm, unet_state)),
                      source)


# -- A1111's rules ---------------------------------------------------------------------------------------------
def a1111_compvis_name(name: str, is_sd2: bool) -> str:
    """A1111's conversion of a diffusers/kohya-style layer name to its own (names already in LDM form pass).

    Deliberately not built on models.ldm_writer.unet_key_to_ldm: this is the *webui's* rule set, with its fixed
    three layers per level and its upsampler slot rule, so the check catches files our own mapping gets wrong."""

    def openclip(prefix, layer, rest):
        rest = rest.replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        return f"{prefix}model_transformer_resblocks_{layer}_{rest}"

    if m := re.fullmatch(r"lora_unet_conv_in(.*)", name):
        return f"diffusion_model_input_blocks_0_0{m[1]}"
    if m := re.fullmatch(r"lora_unet_conv_out(.*)", name):
        return f"diffusion_model_out_2{m[1]}"
    if m := re.fullmatch(r"lora_unet_time_embedding_linear_(\d+)(.*)", name):
        return f"diffusion_model_time_embed_{int(m[1]) * 2 - 2}{m[2]}"
    if m := re.fullmatch(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", name):
        suffix = _RESNET_SUFFIX.get(m[4], m[4]) if m[2] == "resnets" else m[4]
        return f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_{suffix}"
    if m := re.fullmatch(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", name):
        suffix = _RESNET_SUFFIX.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else int(m[2]) * 2}_{suffix}"
    if m := re.fullmatch(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", name):
        suffix = _RESNET_SUFFIX.get(m[4], m[4]) if m[2] == "resnets" else m[4]
        return f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_{suffix}"
    if m := re.fullmatch(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", name):
        return f"diffusion_model_input_blocks_{3 + int(m[1]) * 3}_0_op"
    if m := re.fullmatch(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", name):
        level = int(m[1])
        return f"diffusion_model_output_blocks_{2 + level * 3}_{2 if level > 0 else 1}_conv"
    if m := re.fullmatch(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", name):
        return openclip("", m[1], m[2]) if is_sd2 else f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"
    if m := re.fullmatch(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", name):
        return openclip("1_", m[1], m[2])
    return name


def a1111_match(name: str, webui: frozenset[str], is_sd2: bool) -> tuple[str | None, bool]:
    """(the webui layer a file name lands on, whether it went through the q/k/v → MultiheadAttention fallback)."""
    key = a1111_compvis_name(name, is_sd2)
    if key in webui:
        return key, False
    if (m := re.fullmatch(r"(.*)_([qkv]_proj)", key)) and m[1] in webui:
        return m[1], True
    if "lora_unet" in name and (alt := name.replace("lora_unet", "diffusion_model")) in webui:
        return alt, False
    if "lora_te1_text_model" in name:
        for replacement in ("0_transformer_text_model", "transformer_text_model"):
            if (alt := name.replace("lora_te1_text_model", replacement)) in webui:
                return alt, False
    return None, False


# -- the check ---------------------------------------------------------------------------------------------------
def check_keys(keys, names: ModelNames) -> CompatReport:
    """Every key of a file under each rule set; unknown parts (after the first `.`) count as unmatched."""
    report = CompatReport()
    is_sd2 = names.family.is_sd2
    mha_parts: dict[str, set[str]] = {}
    matched_layers: set[str] = set()
    forge = names.forge
    for key in sorted(keys):
        name, _, part = key.partition(".")
        if part not in FORGE_CLASSIC_PARTS or name not in forge:
            report.forge_unmatched.append(key)
        if part not in KNOWN_PARTS:
            report.a1111_unmatched.append(key)
            report.comfyui_unmatched.append(key)
            continue
        layer, via_mha = a1111_match(name, names.webui, is_sd2)
        if layer is None:
            report.a1111_unmatched.append(key)
        else:
            matched_layers.add(layer)
            if via_mha:
                mha_parts.setdefault(layer, set()).add(name.rsplit("_", 2)[-2])
        if name not in names.comfyui:
            report.comfyui_unmatched.append(key)
    for layer, parts in sorted(mha_parts.items()):
        if parts != {"q", "k", "v"} or f"{layer}_out_proj" not in matched_layers:
            report.a1111_ineffective.append(f"{layer}: q/k/v need q, k, v and out_proj together (has {sorted(parts)})")
    return report
