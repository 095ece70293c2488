"""The saved LoRA file: kohya keys, `save_precision` for every tensor, √strength, metadata, hashes, atomic
write, and the loader-compatibility self-check; plus reading a file back and `inspect`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..models.checkpoint import open_state_dict, write_safetensors_atomic
from ..models.devices import PRECISIONS
from ..models.family import FAMILIES, SD1, SD2, SDXL, Family
from .blocks import BASE, BLOCK_IDS, block_of_ldm_name
from .compat import CompatReport, ModelNames, a1111_compvis_name, check_keys
from .metadata import addnet_hashes

log = logging.getLogger(__name__)

SAVE_PRECISIONS = {**PRECISIONS, "model": torch.float16}  # "model": kohya's default, fp16


class IncompatibleLoRA(UserError):
    """The file was written, but a loader would not match some keys (the message names them)."""


class NonFiniteTensors(UserError):
    """Some tensors are NaN or infinite as they would be written: the file is not written."""


def non_finite_keys(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The keys of the floating-point tensors holding a NaN or an infinity, in order."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


@dataclass
class SavedLoRA:
    path: Path
    report: CompatReport | None
    metadata: dict[str, str]


def lora_file_name(save_lora_name: str, suffix: str = "") -> str:
    """`<name>[suffix].safetensors`; an empty name is `untitled`; path separators and `..` are refused."""
    name = (save_lora_name or "").strip() or "untitled"
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise UserError(f"save_lora_name {save_lora_name!r} must be a plain file name (no '/', '\\' or '..')")
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    return f"{name}{suffix}.safetensors"


def save_network(
    network,
    path: str | Path,
    *,
    metadata: dict[str, str],
    save_precision: str = "fp16",
    strength: float = 1.0,
    overwrite: bool = False,
    names: ModelNames | None = None,
) -> SavedLoRA:
    """Write the network; then check it under A1111's and ComfyUI's rules and raise if any key is unmatched."""
    path = Path(path)
    exists = f"{path} already exists; tick save_overwrite or choose another save_lora_name"
    if path.exists() and not overwrite:  # fail before the work; the exclusive write below is the guarantee
        raise UserError(exists)
    if save_precision not in SAVE_PRECISIONS:
        raise UserError(f"save_precision {save_precision!r} is not one of {', '.join(SAVE_PRECISIONS)}")
    dtype = SAVE_PRECISIONS[save_precision]
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in network.save_tensors(strength).items()}
    bad = non_finite_keys(tensors)  # as written: after √strength and the cast (in fp16, over 65504 is inf)
    if bad:
        raise NonFiniteTensors(
            f"{path} not written: {len(bad)} of {len(tensors)} tensors are not finite in {save_precision} "
            f"(first: {bad[0]}); lower train_learning_rate or network_strength"
            + ("" if dtype == torch.float32 else ", or use save_precision fp32"))
    metadata = dict(metadata)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = addnet_hashes(tensors, metadata)
    try:
        write_safetensors_atomic(tensors, path, metadata, overwrite=overwrite)
    except FileExistsError:  # appeared while we were writing (another run, another thread): never replaced
        raise UserError(exists) from None
    except OSError as err:  # a full disk, a folder gone read-only: nothing was written, the temporary file is gone
        raise UserError(f"{path} not written: {err.strerror or err}") from None
    report = None
    if names is not None:
        report = check_keys(tensors.keys(), names)
        if not report.ok:
            bad = report.problems
            raise IncompatibleLoRA(f"{path} was written, but {len(bad)} key(s) would not load: {', '.join(bad[:5])}")
    log.info("saved %s (%d tensors, %s)", path, len(tensors), save_precision)
    return SavedLoRA(path, report, metadata)


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a LoRA file."""
    with open_state_dict(path) as sd:
        tensors = {k: sd[k] for k in sd}
        return tensors, dict(sd.metadata)


# -- inspect ---------------------------------------------------------------------------------------------------
def family_of_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Family | None:
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return SDXL
    if version.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        return SD2
    if version.startswith("sd_v1"):
        return SD1
    names = {k.split(".", 1)[0] for k in tensors}
    if any(n.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks", "lora_unet_output_blocks")) for n in names):
        return SDXL
    for key, value in tensors.items():
        if "attn2_to_k" in key and key.endswith(("lora_down.weight", "hada_w1_b")):
            return {768: SD1, 1024: SD2}.get(value.shape[-1])
    return None


def algorithm_of(parts: dict[str, torch.Tensor]) -> str:
    return "loha" if "hada_w1_a" in parts else "lora"


def block_of_lora_name(name: str) -> str:
    if name.startswith("lora_te"):
        return BASE
    return block_of_ldm_name(a1111_compvis_name(name, False))


def describe(tensors: dict[str, torch.Tensor]) -> dict:
    """Network type, ranks (linear and k×k conv), alphas and module count per block of a file's tensors."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        grouped.setdefault(name, {})[part] = value
    linear, conv, alphas = set(), set(), set()
    blocks = {b: 0 for b in BLOCK_IDS}
    has_resnet = False
    algorithms = set()
    for name, parts in grouped.items():
        algorithm = algorithm_of(parts)
        algorithms.add(algorithm)
        if algorithm == "loha":
            rank, kxk = parts["hada_w1_b"].shape[0], "hada_t1" in parts
        else:
            down = parts.get("lora_down.weight")
            rank = down.shape[0] if down is not None else 0
            kxk = down is not None and down.ndim == 4 and tuple(down.shape[2:]) != (1, 1)
        (conv if kxk else linear).add(int(rank))
        if "alpha" in parts:
            alphas.add(float(parts["alpha"]))
        try:
            blocks[block_of_lora_name(name)] += 1
        except ValueError:  # a layer outside the 26 blocks (conv_in, time embedding): counted, not hidden
            blocks["other"] = blocks.get("other", 0) + 1
        if re.search(r"resnets|in_layers|out_layers|emb_layers|skip_connection|samplers|_op$|_conv$", name):
            has_resnet = True
    network_type = "loha" if "loha" in algorithms else ("c3lier" if has_resnet or conv else "lierla")
    return {
        "network_type": network_type,
        "modules": len(grouped),
        "ranks": {"linear": sorted(linear), "conv": sorted(conv)},
        "alphas": sorted(alphas),
        "modules_per_block": {b: n for b, n in blocks.items() if n},
    }


def reference_names(family: Family, model: str | Path | None = None) -> ModelNames:
    """Layer names to check against: those of `model`, else of the family's released architecture."""
    from .compat import names_from_components

    if model is not None:
        from ..models.components import load_components

        c = load_components(model, with_vae=False)
        if c.family is not family:
            raise UserError(f"the LoRA is for {family.title} but {model} is {c.family.title}")
        return names_from_components(c.family, c.unet, c.text_encoders, str(model))
    from ..models.demo import architecture

    _, unet, _, text_encoders = architecture(family, "full", device="meta")
    return names_from_components(family, unet, text_encoders, f"the released {family.title} architecture")


def inspect_lora(path: str | Path, model: str | Path | None = None, family_name: str | None = None) -> dict:
    tensors, metadata = read_lora(path)
    if not tensors:
        raise UserError(f"{path}: contains no tensors")
    if any(k.startswith("model.diffusion_model.") for k in tensors):
        raise UserError(f"{path}: is a model checkpoint, not a LoRA")
    family = FAMILIES[family_name] if family_name else family_of_lora(tensors, metadata)
    if family is None:
        raise UserError(f"{path}: cannot tell which model family it is for; pass --family or --model")
    names = reference_names(family, model)
    report = check_keys(tensors.keys(), names)
    bad = non_finite_keys(tensors)
    return {
        "file": str(path),
        "family": family.name,
        **describe(tensors),
        "checked_against": names.source,
        "unmatched": report.as_dict(),
        "non_finite": {"count": len(bad), "keys": bad[:20]},
        "metadata": metadata,
    }
