"""webui modules/sd_vae.py: `vae_dict` (name → path) filled by `refresh_vae_list()`."""

import glob
import os

from modules import shared

vae_dict = {}


def refresh_vae_list():
    vae_dict.clear()
    folder = shared.cmd_opts.vae_dir
    if folder:
        for ext in ("pt", "ckpt", "safetensors"):
            for filepath in glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True):
                vae_dict[os.path.basename(filepath)] = filepath


refresh_vae_list()
