"""Where and in what dtype the adapters live, on every device this machine has; `pytest -m cuda` trains each network
type on CUDA in fp16 and bf16 (skipped without CUDA), and reports the job's peak GPU memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.jobs.logs import LossLog, read_log
from trainer.networks.blocks import BLOCK_IDS
from trainer.networks.network import NetworkSpec, create_network
from trainer.runner import run_job

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("network_type", ["lierla", "c3lier", "loha"])
def test_every_adapter_tensor_is_on_the_training_device_in_the_lora_dtype(demo_models, network_type, device):
    """A bf16 model under fp32 adapters: every parameter and buffer of every adapter on `device`, in fp32 (a tensor
    left on the CPU, or in the model's dtype, costs a copy or a cast at every step)."""
    from trainer.models.components import load_components

    c = load_components(demo_models["sd1"], dtype=torch.bfloat16, device=torch.device(device))
    c.unet.to(device=device, dtype=torch.bfloat16)
    network = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(network_type=network_type, rank=4,
                                                                            conv_rank=4, blocks=BLOCK_IDS),
                             dtype=torch.float32, device=torch.device(device))
    try:
        tensors = [*network.named_parameters(), *network.named_buffers()]
        assert tensors
        wrong = [(name, t.device, t.dtype) for name, t in tensors
                 if t.device.type != device or (t.is_floating_point() and t.dtype != torch.float32)]
        assert not wrong, wrong[:5]
    finally:
        network.detach()


def test_the_peak_memory_line_joins_the_csv_header_and_the_rows_still_read(tmp_path):
    log = LossLog(tmp_path / "a.csv", {"network_rank": 4}, 1)
    log.append(1, 0.5, [1e-4], 0.5)
    log.add_header("peak_gpu_memory_gib", "3.04")
    lines = (tmp_path / "a.csv").read_text(encoding="utf-8").splitlines()
    assert lines.index("peak_gpu_memory_gib,3.04") == lines.index("Step,Loss,Learning Rate 1,Raw Loss") - 1
    assert read_log(tmp_path / "a.csv")["Raw Loss"].tolist() == [0.5]


def test_the_step_time_bench_runs_and_reports_both_references():
    proc = subprocess.run([sys.executable, "bench/step_time.py", "--size", "tiny", "--steps", "2", "--chunks", "1",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("vs hand-written", "vs diffusers + peft", "gradient checkpointing", "iLECO step vs its floor"):
        assert row in proc.stdout, proc.stdout


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("network_type", ["lierla", "c3lier", "loha"])
def test_each_network_type_trains_on_cuda(lora_job, network_type, precision, tmp_path):
    job, host = lora_job(network_type=network_type, train_model_precision=precision, train_iterations="4",
                         network_conv_rank="4", logging_save_csv="true")
    assert torch.device(host.device).type == "cuda"
    result = run_job(job, host, logs_dir=tmp_path / "logs")
    assert result.status == "finished"
    tensors = load_file(str(result.path))
    assert tensors and all(torch.isfinite(t.float()).all() for t in tensors.values())
    assert "Peak GPU memory:" in result.message
    (csv,) = (tmp_path / "logs").rglob("*.csv")
    assert "peak_gpu_memory_gib," in csv.read_text(encoding="utf-8")
