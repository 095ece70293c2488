"""Is a checkpoint eps- or v-prediction? The user's setting, then what the files say, then the webui's test forward."""

from __future__ import annotations

import torch

from . import ldm_config
from .family import Family

V_METADATA = {
    "modelspec.prediction_type": {"v", "v_prediction", "v-prediction"},
    "ss_v_parameterization": {"true", "True"},
}
V_MARKER_KEYS = ("v_pred",)  # some SDXL v-pred releases carry an empty `v_pred` tensor


def declared_v_prediction(config: dict, config_is_sidecar: bool, metadata: dict, keys) -> tuple[bool | None, str]:
    """What the checkpoint's own files say, without running the model. (None, "") if they say nothing."""
    if config_is_sidecar:
        said = ldm_config.parameterization(config)
        if said is not None:
            return said == "v", "the .yaml beside the checkpoint"
    for key, values in V_METADATA.items():
        if metadata.get(key) in values:
            return True, f"metadata {key}"
    if any(k in keys for k in V_MARKER_KEYS):
        return True, "a v_pred marker tensor"
    if metadata.get("modelspec.prediction_type") in {"epsilon", "eps"}:
        return False, "metadata modelspec.prediction_type"
    return None, ""


def test_forward_says_v(unet, cross_attention_dim: int) -> bool:
    """The webui's SD2 probe: at t=999 an eps model returns ≈ its input, a v model something far below it.

    Meaningful only for trained weights; the caller uses it for full-size SD2 files that say nothing else.
    """
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    t = torch.tensor([999], device=param.device)
    context = torch.ones((1, 77, cross_attention_dim), dtype=param.dtype, device=param.device)
    with torch.no_grad():
        out = unet(x, t, encoder_hidden_states=context).sample
    return (out - x).float().mean().item() < -1.0


def resolve_v_prediction(
    user_setting: bool | None,
    family: Family,
    config: dict,
    config_is_sidecar: bool,
    metadata: dict,
    keys,
    unet=None,
) -> tuple[bool, str]:
    """(is_v_prediction, why). A user setting of True/False always wins; None means "detect"."""
    if user_setting is not None:
        return bool(user_setting), "the model_v_pred setting"
    said, why = declared_v_prediction(config, config_is_sidecar, metadata, keys)
    if said is not None:
        return said, why
    if family.is_sd2 and unet is not None and unet.config.cross_attention_dim == 1024:
        return test_forward_says_v(unet, 1024), "a test forward (the webui's SD2 check)"
    return False, f"the {family.title} default"
