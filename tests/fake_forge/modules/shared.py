"""Neo modules/shared.py: `opts`, `cmd_opts`, `state`; `sd_model` is a property (modules/shared_items.py) that never
loads a model (forge-api.md F3).

`opts`: `sd_model_checkpoint` (the dropdown value: the relative file name, no hash; None until set),
`CLIP_stop_at_last_layers` 2, `emphasis`, `forge_preset`, `forge_additional_modules`, `forge_unet_storage_dtype`, ….
`cmd_opts`: `lora_dir` + `lora_dirs`, `ckpt_dirs`, `vae_dirs`, `text_encoder_dirs` (lists), `embeddings_dir`,
`ui_config_file`, …; no `ckpt_dir`, `models_dir`, `no_half`, `precision`."""

import argparse
import os

from modules import paths_internal, shared_state


class Options:
    """`opts.<key>` and `opts.data.get(key)`; `onchange(key, fn)`; `set(key, value)`; `save(filename)`."""

    def __init__(self, data):
        object.__setattr__(self, "data", dict(data))
        object.__setattr__(self, "_listeners", {})

    def __getattr__(self, key):
        try:
            return self.data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self.data[key] = value
        for fn in self._listeners.get(key, []):
            fn()

    def set(self, key, value, is_api=False, run_callbacks=True):
        old = self.data.get(key)
        if old == value:
            return False
        self.data[key] = value
        if run_callbacks:
            for fn in self._listeners.get(key, []):
                fn()
        return True

    def onchange(self, key, func, call=True):
        self._listeners.setdefault(key, []).append(func)
        if call:
            func()

    def save(self, filename):
        pass


models_path = paths_internal.models_path
cmd_opts = argparse.Namespace(
    lora_dir=os.environ.get("FAKE_FORGE_LORA_DIR", os.path.join(models_path, "Lora")),
    lora_dirs=[],
    ckpt_dirs=[os.environ["FAKE_FORGE_CKPT_DIR"]] if os.environ.get("FAKE_FORGE_CKPT_DIR") else [],
    vae_dirs=[], text_encoder_dirs=[],
    embeddings_dir=os.path.join(models_path, "embeddings"),
    hypernetwork_dir=os.path.join(models_path, "hypernetworks"),
    data_dir=paths_internal.data_path, model_ref=None,
    ui_config_file=os.environ.get("FAKE_FORGE_UI_CONFIG", os.path.join(paths_internal.data_path, "ui-config.json")),
    use_cpu=[], api=False, nowebui=False, skip_install=False,
)
opts = Options({
    "sd_model_checkpoint": None, "sd_checkpoint_hash": "", "CLIP_stop_at_last_layers": 2, "emphasis": "Original",
    "forge_preset": "sd", "forge_additional_modules": [], "forge_unet_storage_dtype": "Automatic",
    "interrupt_after_current": True, "lora_preset_filter": False, "ui_tab_order": [], "hidden_tabs": [],
    "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_grids": "", "outdir_txt2img_grids": "outputs/txt2img-grids",
})
state = shared_state.State()
config_filename = os.path.join(paths_internal.data_path, "config.json")

from modules import shared_items  # noqa: E402,F401 — makes `sd_model` a property
