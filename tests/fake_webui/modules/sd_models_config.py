"""webui modules/sd_models_config.py: which config a checkpoint is built with — a `<ckpt>.yaml` next to the file
wins; otherwise a guess from the keys (the real one also runs a test forward to tell SD2-v from SD2-eps; here SD2
without a .yaml is eps)."""

import os

from modules import paths_internal

sd_configs_path = os.path.join(paths_internal.script_path, "configs")
config_default = os.path.join(sd_configs_path, "v1-inference.yaml")
config_sd2 = os.path.join(sd_configs_path, "v2-inference.yaml")
config_sdxl = os.path.join(sd_configs_path, "sd_xl_base.yaml")


def guess_model_config_from_state_dict(sd, filename):
    if "conditioner.embedders.1.model.ln_final.weight" in sd:
        return config_sdxl
    if "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in sd:
        return config_sd2
    return config_default


def find_checkpoint_config(state_dict, info):
    if info is None:
        return guess_model_config_from_state_dict(state_dict, "")
    config = os.path.splitext(info.filename)[0] + ".yaml"
    if os.path.exists(config):
        return config
    return guess_model_config_from_state_dict(state_dict, info.filename)
