"""webui modules/shared.py: opts, cmd_opts, state, sd_model (a property in the real webui; a plain attribute here)."""

import argparse
import os
import time

from modules import paths_internal


class Options:
    """`opts.<key>` and `opts.data.get(key)`; `onchange(key, fn)`; `save(filename)`."""

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

    def onchange(self, key, func, call=True):
        self._listeners.setdefault(key, []).append(func)
        if call:
            func()

    def save(self, filename):
        pass


class State:
    """The current-job state: begin/end/interrupt; polled by long jobs through `interrupted`."""

    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.sampling_step = 0
        self.textinfo = None
        self.current_image = None
        self.time_start = None
        self.begun = 0  # test-only: how many jobs began

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.skipped = False
        self.job = job
        self.job_no = 0
        self.job_count = -1
        self.time_start = time.time()
        self.begun += 1

    def end(self):
        self.job = ""
        self.job_count = 0

    def interrupt(self):
        self.interrupted = True


models_path = paths_internal.models_path
cmd_opts = argparse.Namespace(
    lora_dir=os.environ.get("FAKE_WEBUI_LORA_DIR", os.path.join(models_path, "Lora")),
    lyco_dir_backcompat=os.path.join(models_path, "LyCORIS"),
    ckpt_dir=os.environ.get("FAKE_WEBUI_CKPT_DIR"),
    vae_dir=os.environ.get("FAKE_WEBUI_VAE_DIR"),
    data_dir=paths_internal.data_path, models_dir=models_path,
    no_half=True, use_cpu=["all"], api=False, nowebui=False, skip_install=False,
)
opts = Options({"sd_model_checkpoint": None, "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1,
                "emphasis": "Original", "ui_tab_order": [], "hidden_tabs": []})
state = State()
sd_model = None
config_filename = os.path.join(paths_internal.data_path, "config.json")
