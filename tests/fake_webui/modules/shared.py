"""webui modules/shared.py: opts, cmd_opts, state; `sd_model` is a property (modules/shared_items.py swaps this module's
class): reading it returns `sd_models.model_data.get_sd_model()`, which loads a checkpoint on the first access."""

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
    """The current job: begin/end/interrupt/skip; polled by long jobs through `interrupted`; read by the progress
    API (job_no/job_count, sampling_step/sampling_steps, textinfo, current_image)."""

    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.current_image = None
        self.time_start = None
        self.begun = 0  # test-only: how many jobs began

    def begin(self, job="(unknown)"):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.current_image = None
        self.skipped = False
        self.interrupted = False
        self.textinfo = None
        self.job = job
        self.begun += 1

    def end(self):
        self.job = ""
        self.job_count = 0

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def progress_snapshot(self):
        """Test-only: what the webui's /internal/progress computes from this state — progress = job_no/job_count
        + (1/job_count)·sampling_step/sampling_steps (each term only when its count is > 0; capped at 1), eta from
        the time since begin; plus the fields it shows."""
        progress = 0.0
        if self.job_count > 0:
            progress += self.job_no / self.job_count
            if self.sampling_steps > 0:
                progress += 1 / self.job_count * self.sampling_step / self.sampling_steps
        progress = min(progress, 1.0)
        elapsed = time.time() - self.time_start if self.time_start else 0.0
        eta = elapsed / progress - elapsed if progress > 0 else None
        return {"active": bool(self.job), "progress": progress, "eta": eta, "textinfo": self.textinfo,
                "job": self.job, "job_no": self.job_no, "job_count": self.job_count,
                "sampling_step": self.sampling_step, "sampling_steps": self.sampling_steps}


models_path = paths_internal.models_path
cmd_opts = argparse.Namespace(
    lora_dir=os.environ.get("FAKE_WEBUI_LORA_DIR", os.path.join(models_path, "Lora")),
    lyco_dir_backcompat=os.path.join(models_path, "LyCORIS"),
    ckpt_dir=os.environ.get("FAKE_WEBUI_CKPT_DIR"),
    vae_dir=os.environ.get("FAKE_WEBUI_VAE_DIR"),
    embeddings_dir=os.path.join(paths_internal.data_path, "embeddings"),
    hypernetwork_dir=os.path.join(models_path, "hypernetworks"),
    data_dir=paths_internal.data_path, models_dir=models_path,
    ui_config_file=os.environ.get("FAKE_WEBUI_UI_CONFIG", os.path.join(paths_internal.data_path, "ui-config.json")),
    lowvram=False, medvram=False, medvram_sdxl=False,
    no_half=True, use_cpu=["all"], api=False, nowebui=False, skip_install=False,
)
opts = Options({"sd_model_checkpoint": None, "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1,
                "emphasis": "Original", "ui_tab_order": [], "hidden_tabs": [],
                "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images",
                "outdir_grids": "", "outdir_txt2img_grids": "outputs/txt2img-grids"})
state = State()
config_filename = os.path.join(paths_internal.data_path, "config.json")

from modules import shared_items  # noqa: F401 — makes `sd_model` a property, as the webui's shared_items does
