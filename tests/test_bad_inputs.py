"""Bad input, as a careful but hostile user gives it to `python -m trainer train`: one line, exit code 2, no
traceback, and the output folder exactly as it was (no new file, an existing one byte-identical, no temp file).
Every row is refused before the model loads (the loader is made to fail loudly if it is reached)."""

from __future__ import annotations

import json
import os

import pytest

from trainer.__main__ import main

KEEP = b"an existing LoRA the run must not touch"


def _job(sample_images, **changes) -> dict:
    base = {"mode": "LoRA", "lora_data_directory": str(sample_images), "image_size(height, width)": "64",
            "image_min_length": "64", "image_buckets_step": 64, "train_iterations": "2", "train_batch_size": "1",
            "save_lora_name": "bad", "train_seed": "0", "network_rank": 4, "network_alpha": 2}
    base.update(changes)
    return base


def _settings_rows():
    rows = {
        # non-finite and out-of-range numbers
        "alpha nan": ({"network_alpha": "nan"}, "network_alpha: 'nan' must be a finite number"),
        "alpha inf": ({"network_alpha": "inf"}, "network_alpha: 'inf' must be a finite number"),
        "snr gamma nan": ({"train_snr_gamma": "nan"}, "train_snr_gamma: 'nan' must be a finite number"),
        "snr gamma -inf": ({"train_snr_gamma": "-inf"}, "train_snr_gamma: '-inf' must be a finite number"),
        "lr inf": ({"train_learning_rate": "inf"}, "train_learning_rate: 'inf' must be a finite number"),
        "strength nan": ({"network_strength": "nan"}, "network_strength: 'nan' must be a finite number"),
        "alt ratio inf": ({"diff_alt_ratio": "1e999"}, "diff_alt_ratio: '1e999' must be a finite number"),
        "seed -5": ({"train_seed": "-5"}, "train_seed: -5 is out of range"),
        "seed overflows": ({"train_seed": str(2**70)}, "train_seed: 1180591620717411303424 is out of range"),
        "seed nan": ({"train_seed": "nan"}, "train_seed: 'nan' is not a whole number"),
        "seed inf": ({"train_seed": "inf"}, "train_seed: 'inf' is not a whole number"),
        "min length > size": ({"image_min_length": "512"}, "image_min_length: 512 is larger than image_size 64x64"),
        # output names
        "name with NUL": ({"save_lora_name": "a\x00b"}, "save_lora_name: 'a\\x00b' must be a plain file name"),
        "name with colon": ({"save_lora_name": "c:stream"}, "not allowed: ':'"),
        "name with newline": ({"save_lora_name": "two\nlines"}, "not allowed: '\\n'"),
        "name with tab": ({"save_lora_name": "a\tb"}, "not allowed: '\\t'"),
        "name too long": ({"save_lora_name": "x" * 300}, "save_lora_name: 300 bytes is too long"),
        "name multibyte too long": ({"save_lora_name": "é" * 150}, "300 bytes is too long"),
        "name with slash": ({"save_lora_name": "../escape"}, "must be a plain file name"),
        "name is dots": ({"save_lora_name": ".."}, "must be a plain file name"),
        # optimizer and schedule settings strings
        "optimizer kwarg": ({"train_optimizer_settings": "no_such_arg=1"}, "train_optimizer_settings: AdamW does not"),
        "optimizer not kv": ({"train_optimizer_settings": "weight_decay"}, "'weight_decay' is not key=value"),
        "optimizer bad value": ({"train_optimizer_settings": "betas=oops"}, "train_optimizer_settings"),
        "scheduler kwarg": ({"train_lr_scheduler": "step", "train_lr_scheduler_settings": "nope=2"},
                            "train_lr_scheduler_settings: step does not accept"),
        "scheduler diffusers kwarg": ({"train_lr_scheduler_settings": "gamma=0.5"},
                                      "train_lr_scheduler_settings: cosine takes none of ['gamma']"),
        "piecewise without rules": ({"train_lr_scheduler": "piecewise_constant"}, "train_lr_step_rules"),
        "scheduler not kv": ({"train_lr_scheduler_settings": "=3"}, "is not key=value"),
        # bounded memory
        "batch 100000": ({"train_batch_size": "100000"}, "GiB of memory (estimate) but"),
        "image size 100000": ({"image_size(height, width)": "100000", "image_min_length": "64"},
                              "GiB of memory (estimate) but"),
    }
    return rows


@pytest.fixture
def cli(tmp_path, demo_models, monkeypatch, capsys):
    """run(config dict or path) → (exit code, stderr); the output folder holds one existing file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.safetensors").write_bytes(KEEP)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded: this input should have been refused before")

    monkeypatch.setattr("trainer.host.standalone.load_components", no_loading)

    def run(config, *extra):
        path = config
        if isinstance(config, dict):
            path = tmp_path / "job.json"
            path.write_text(json.dumps(config), encoding="utf-8")
        code = main(["train", str(path), "--model", str(demo_models["sd1"]), "--output-dir", str(out), *extra])
        return code, capsys.readouterr().err

    run.out = out
    return run


def assert_refused(code, err, expected, out):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    assert expected in lines[-1], lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.safetensors"]  # nothing new, no temp file
    assert (out / "keep.safetensors").read_bytes() == KEEP


@pytest.mark.parametrize("case", list(_settings_rows()))
def test_bad_settings_are_refused_before_loading(cli, sample_images, case):
    changes, expected = _settings_rows()[case]
    code, err = cli(_job(sample_images, **changes))
    assert_refused(code, err, expected, cli.out)


def test_the_output_folder_is_a_file(cli, sample_images, tmp_path, demo_models, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job(sample_images)), encoding="utf-8")
    code = main(["train", str(path), "--model", str(demo_models["sd1"]), "--output-dir", str(not_a_folder / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert not_a_folder.read_text() == "x"


def test_an_output_folder_without_space(cli, sample_images, monkeypatch):
    import shutil

    usage = shutil.disk_usage(cli.out)
    monkeypatch.setattr("trainer.preflight.shutil.disk_usage", lambda p: usage._replace(free=10 * 2**20))
    code, err = cli(_job(sample_images))
    assert_refused(code, err, "has only 10 MiB free", cli.out)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_a_read_only_output_folder(cli, sample_images):
    cli.out.chmod(0o555)
    try:
        code, err = cli(_job(sample_images))
        assert_refused(code, err, "is not writable", cli.out)
    finally:
        cli.out.chmod(0o755)


def test_resuming_a_lora_of_another_family(cli, sample_images, tmp_path):
    from safetensors.torch import save_file
    import torch

    sdxl_lora = tmp_path / "xl.safetensors"
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    save_file({f"{name}.lora_down.weight": torch.zeros(4, 2048), f"{name}.lora_up.weight": torch.zeros(640, 4),
               f"{name}.alpha": torch.tensor(4.0)}, str(sdxl_lora), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    code, err = cli(_job(sample_images, network_resume=str(sdxl_lora)))
    assert_refused(code, err, "network_resume: xl.safetensors is a SDXL base LoRA, but the model is SD1.x", cli.out)


def _config_rows(tmp_path, sample_images):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    folder = tmp_path / "a_folder.json"
    folder.mkdir()
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"save_lora_name": "caf\xe9"}'.encode("latin-1"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"mode": "LoRA",')
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([_job(sample_images)]))
    return {
        "config nested too deep": (deep, "nested too deeply"),
        "config is a folder": (folder, "is a folder; give a settings JSON file"),
        "config not UTF-8": (latin, "not UTF-8 text"),
        "config not JSON": (broken, "not valid JSON"),
        "config is a list": (listed, "expected a JSON object of settings, not a list"),
        "config missing": (tmp_path / "nope.json", "file not found"),
        "blocks as a number": (_job(sample_images, **{"network_blocks(BASE = TextEncoder)": 5}),
                               "is not a list of block names"),
        "image size as a list": (_job(sample_images, **{"image_size(height, width)": [64, 64]}),
                                 "is not \"height,width\""),
        "a number as null": (_job(sample_images, train_iterations=None), "train_iterations: None is not a whole"),
        "mode as a list": (_job(sample_images, mode=["LoRA"]), "is not one of LoRA"),
    }


@pytest.mark.parametrize("case", ["config nested too deep", "config is a folder", "config not UTF-8",
                                  "config not JSON", "config is a list", "config missing", "blocks as a number",
                                  "image size as a list", "a number as null", "mode as a list"])
def test_bad_config_files_and_shapes(cli, sample_images, tmp_path, case):
    config, expected = _config_rows(tmp_path, sample_images)[case]
    code, err = cli(config)
    assert_refused(code, err, expected, cli.out)


def test_a_pickle_named_safetensors_is_refused_without_running_it(cli, sample_images, tmp_path, capsys):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    fake = tmp_path / "model.safetensors"
    fake.write_bytes(pickle.dumps({"state_dict": Payload()}))
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job(sample_images)), encoding="utf-8")
    code = main(["train", str(path), "--model", str(fake), "--output-dir", str(cli.out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    assert not marker.exists()


@pytest.fixture
def restore_sigint():
    import signal

    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_loading_stops_at_once(cli, sample_images, monkeypatch, restore_sigint):
    import signal

    monkeypatch.setattr("trainer.host.standalone.load_components",
                        lambda *a, **k: signal.raise_signal(signal.SIGINT))
    code, err = cli(_job(sample_images))
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in cli.out.iterdir()) == ["keep.safetensors"]


def test_ctrl_c_while_training_saves_and_exits_non_zero(cli, sample_images, monkeypatch, restore_sigint):
    import signal

    from trainer.engine import loop
    from trainer.models.components import load_components

    monkeypatch.setattr("trainer.host.standalone.load_components", load_components)  # this one trains
    real, steps = loop.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        out = real(*args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_ctrl_c)
    code, err = cli(_job(sample_images, train_iterations="5"))
    assert code == 130, err
    assert len(steps) == 2 and (cli.out / "bad_2steps.safetensors").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_data_folder_with_a_fifo_or_a_device(cli, sample_images, tmp_path):
    import shutil

    for kind in ("fifo", "device"):
        folder = tmp_path / kind
        shutil.copytree(sample_images, folder)
        if kind == "fifo":
            os.mkfifo(folder / "stuck.png")
        else:
            os.symlink("/dev/zero", folder / "endless.png")
        code, err = cli(_job(sample_images, lora_data_directory=str(folder)))
        assert_refused(code, err, "is not a regular file", cli.out)


def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing(cli, sample_images, monkeypatch):
    import errno

    from trainer.models.components import load_components

    monkeypatch.setattr("trainer.host.standalone.load_components", load_components)

    import pathlib

    real_write = pathlib.Path.write_bytes

    def full(self, data):  # only the serialised LoRA (8-byte header size, then its JSON header) meets a full disk
        if data[8:9] == b"{":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    code, err = cli(_job(sample_images))
    assert_refused(code, err, "bad.safetensors not written: No space left on device", cli.out)
