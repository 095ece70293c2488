"""The extension inside a fake webui (tests/fake_webui, following the webui's documented module API): registration, the tab, optional
packages missing, and a job run through the webui host. Each case is a fresh interpreter, as a webui start is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "fake_webui" / "run_extension.py"


@pytest.fixture(scope="module")
def webui_dirs(tmp_path_factory, demo_models):
    root = tmp_path_factory.mktemp("webui")
    ckpt = root / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(demo_models["sd1"].with_suffix(suffix), ckpt / f"tiny{suffix}")
    return root


def run_webui(root: Path, **env) -> dict:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "FAKE_WEBUI_ROOT": str(root),
                   "FAKE_WEBUI_CKPT_DIR": str(root / "models" / "Stable-diffusion"),
                   "FAKE_WEBUI_LORA_DIR": str(root / "models" / "Lora"), **env}
    done = subprocess.run([sys.executable, str(DRIVER)], cwd=root, env=environment, capture_output=True, text=True,
                          timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


TAB_IDS = ("tt_message", "tt_start", "tt_stop", "tt_stop_save", "tt_add_queue", "tt_preset", "tt_mode", "tt_model",
           "tt_vae", "tt_network_type", "tt_1_train_iterations", "tt_2_train_iterations",
           "tt_network_blocks(BASE = TextEncoder)", "tt_use_2nd_pass_settings", "tt_2nd_pass", "tt_ileco_group",
           "tt_images_group", "tt_queue_table", "tt_queue_reload", "tt_queue_delete", "tt_plot", "tt_plot_reload",
           "tt_poll", "tt_generate_original",
           # the ToolButtons: under Gradio 4 a webui's Gradio-3-style ToolButton would reach the page without its id
           "tt_preset_load", "tt_preset_save", "tt_preset_refresh", "tt_json_load", "tt_model_refresh",
           "tt_vae_refresh")


def test_the_tab_registers_and_builds(webui_dirs):
    report = run_webui(webui_dirs)
    assert report["tabs"] == [["Blocks", "TrainTrain", "traintrain"]]
    ids = set(report["elem_ids"])
    for expected in TAB_IDS:
        assert expected in ids, expected
    assert not report["message"].startswith("ModuleNotFoundError")


def test_the_tab_registers_and_builds_in_forge_neo(webui_dirs, tmp_path):
    """The same tab in the fake Forge Neo (tests/fake_forge: its Gradio 4 shims applied under Gradio 4)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "FAKE_FORGE_ROOT": str(tmp_path),
                   "FAKE_FORGE_CKPT_DIR": str(webui_dirs / "models" / "Stable-diffusion"),
                   "FAKE_FORGE_LORA_DIR": str(tmp_path / "Lora")}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fake_forge" / "run_extension.py")], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["tabs"] == [["Blocks", "TrainTrain", "traintrain"]]
    assert set(TAB_IDS) <= set(report["elem_ids"]), set(TAB_IDS) - set(report["elem_ids"])
    assert not report["message"].startswith("ModuleNotFoundError")


def test_the_tab_builds_without_lycoris_and_bitsandbytes(webui_dirs):
    report = run_webui(webui_dirs, FAKE_WEBUI_BLOCK="lycoris,bitsandbytes")
    assert report["blocked_loaded"] == []
    assert "tt_start" in report["elem_ids"]


def test_a_missing_required_package_is_shown_in_the_tab(webui_dirs):
    report = run_webui(webui_dirs, FAKE_WEBUI_BLOCK="diffusers")
    assert report["tabs"] == [["Blocks", "TrainTrain", "traintrain"]]  # the tab is still there …
    assert "needs diffusers" in report["message"] and "install.py" in report["message"]  # … and says why
    assert "tt_start" in report["elem_ids"]


def test_an_import_failure_still_gives_a_tab_that_says_why(webui_dirs):
    report = run_webui(webui_dirs, FAKE_WEBUI_BLOCK="torch")
    assert report["tabs"] == [["Blocks", "TrainTrain", "traintrain"]]
    assert "torch" in report["message"] and "tt_start" not in report["elem_ids"]


def _job_file(tmp_path, sample_images, **changes) -> Path:
    data = json.loads((ROOT / "presets" / "LoRA.json").read_text(encoding="utf-8"))
    data.update({"lora_data_directory": str(sample_images), "image_size(height, width)": "64",
                 "image_min_length": "64", "image_buckets_step": 64, "train_iterations": "6",
                 "train_batch_size": "1", "save_lora_name": "webui_run", "train_seed": "0", **changes})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_job_runs_through_the_webui_host(webui_dirs, sample_images, tmp_path):
    report = run_webui(webui_dirs, FAKE_WEBUI_TRAIN=str(_job_file(tmp_path, sample_images)))
    train = report["train"]
    assert train["state"] == "finished", train
    assert Path(train["path"]) == webui_dirs / "models" / "Lora" / "webui_run.safetensors"  # cmd_opts.lora_dir
    assert Path(train["path"]).is_file()
    assert train["jobs_begun"] == 1 and train["lock_free"]  # shared.state.begin/end around it, lock released


def test_the_webui_interrupt_button_stops_a_job(webui_dirs, sample_images, tmp_path):
    job = _job_file(tmp_path, sample_images, train_iterations="200", save_lora_name="webui_interrupted")
    report = run_webui(webui_dirs, FAKE_WEBUI_TRAIN=str(job), FAKE_WEBUI_INTERRUPT="1")
    train = report["train"]
    assert train["state"] == "stopped" and 2 <= train["step"] < 200, train
    assert not (webui_dirs / "models" / "Lora" / "webui_interrupted.safetensors").exists()


def test_the_tab_opens_on_the_model_the_webui_holds_not_on_a_saved_one(webui_dirs, demo_models, tmp_path):
    """The webui restores every labelled widget from ui-config.json (webui-api.md A11); Model, VAE and Message must
    not be, or a restart with another checkpoint would silently train for the old one."""
    ckpt = webui_dirs / "models" / "Stable-diffusion"
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(demo_models["sdxl"].with_suffix(suffix), ckpt / f"other{suffix}")
    config = tmp_path / "ui-config.json"
    first = run_webui(webui_dirs, FAKE_WEBUI_LOAD="tiny", FAKE_WEBUI_UI_CONFIG=str(config))
    assert first["values"]["tt_model"].startswith("tiny")
    saved = json.loads(config.read_text(encoding="utf-8"))
    assert "traintrain/Model/value" not in saved and "traintrain/Message/value" not in saved
    assert saved["traintrain/Mode/value"] == "LoRA"  # other widgets are saved as the webui does …
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in first["model_choices"]]
    other = next(c for c in choices if c.startswith("other"))
    saved.update({"traintrain/Mode/value": "iLECO", "traintrain/Model/value": other,
                  "traintrain/Message/value": "an old message"})
    config.write_text(json.dumps(saved), encoding="utf-8")
    second = run_webui(webui_dirs, FAKE_WEBUI_LOAD="other", FAKE_WEBUI_UI_CONFIG=str(config))
    assert second["values"]["tt_mode"] == "iLECO"  # … and restored (the file was read)
    assert second["values"]["tt_model"].startswith("other")  # the checkpoint loaded now
    third = run_webui(webui_dirs, FAKE_WEBUI_LOAD="tiny", FAKE_WEBUI_UI_CONFIG=str(config))
    assert third["values"]["tt_model"].startswith("tiny") and third["values"]["tt_message"] != "an old message"
