"""`python -m trainer make-demo-model` and `info` as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("family,prefixes", [
    ("sd1", ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")),
    ("sd2", ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.model.transformer.resblocks.")),
    ("sdxl", ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.text_model.",
              "conditioner.embedders.1.model.transformer.resblocks.")),
])
def test_make_demo_model_writes_ldm_layout_and_sidecar(tmp_path, family, prefixes):
    from trainer.models.checkpoint import open_state_dict

    out = tmp_path / f"{family}.safetensors"
    proc = run("make-demo-model", "--family", family, str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    assert out.stat().st_size < 80e6  # tens of MB
    with open_state_dict(out) as sd:
        keys = list(sd)
        for prefix in prefixes:
            assert any(k.startswith(prefix) for k in keys), prefix
        assert sd["model.diffusion_model.input_blocks.0.0.weight"].dtype.is_floating_point
        # zero-initialised LDM layers are random here, so a LoRA can change the output
        for key in ("model.diffusion_model.out.2.weight",
                    "model.diffusion_model.output_blocks.3.0.out_layers.3.weight"):
            assert sd[key].abs().sum() > 0


def test_info_prints_the_summary(demo_models):
    proc = run("info", str(demo_models["sdxl"]))
    assert proc.returncode == 0, proc.stderr
    assert "SDXL base" in proc.stdout and "CLIPTextModelWithProjection" in proc.stdout


def test_info_without_model_uses_the_demo_and_says_so():
    proc = run("info")
    assert proc.returncode == 0, proc.stderr
    assert "bundled demo model" in proc.stdout and "SD1.x" in proc.stdout


def test_ui_refuses_a_busy_port_in_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("ui", "--port", str(port), "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_ui_refuses_a_missing_models_dir(tmp_path):
    result = run("ui", "--models-dir", str(tmp_path / "nope"))
    assert result.returncode == 2 and "--models-dir" in result.stderr and "Traceback" not in result.stderr
