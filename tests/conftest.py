"""Shared fixtures: demo checkpoints per family (written once per session) and a network guard."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# json/ and logs/ of every run this test process starts (in-process or not) go to a folder of its own, not the
# repository's: parallel workers never share a queue file, and a test run leaves no logs behind (trainer/paths.py)
DATA_DIR = tempfile.mkdtemp(prefix="traintrain-test-data-")
os.environ["TRAINTRAIN_DATA_DIR"] = DATA_DIR

FAMILIES = ("sd1", "sd2", "sdxl")


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`: one worker per core) each worker computes on one thread: two workers of two
    threads each on two cores would fight over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config):
    shutil.rmtree(DATA_DIR, ignore_errors=True)


class NetworkAttempt(AssertionError):
    pass


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with outbound connections (and DNS look-ups) to anything but loopback refused."""
    attempts = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            attempts.append(address)
            raise NetworkAttempt(f"network access attempted: {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost") and not _is_loopback(host):
            attempts.append(host)
            raise NetworkAttempt(f"DNS look-up attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """family → path of a demo checkpoint (fp16 safetensors + .yaml sidecar), seed 0."""
    from trainer.models.demo import make_demo_model

    folder = tmp_path_factory.mktemp("demo-models")
    return {f: make_demo_model(f, folder / f"demo-{f}.safetensors") for f in FAMILIES}


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory):
    """Four drawn 96-px images with .txt captions."""
    from trainer.demo_assets import ensure_sample_images

    return ensure_sample_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def lora_job(demo_models, sample_images, tmp_path):
    """job(**overrides) → (Job, StandaloneHost): a small LoRA run on the SD1 demo model writing into tmp_path."""
    import json
    from pathlib import Path

    from trainer.host.standalone import StandaloneHost
    from trainer.settings import apply_overrides, job_from_json

    preset = json.loads((Path(__file__).parent.parent / "presets" / "LoRA.json").read_text(encoding="utf-8"))

    def make(family="sd1", **overrides):
        base = {
            "image_size(height, width)": "64", "image_min_length": "64", "image_buckets_step": "64",
            "lora_data_directory": str(sample_images), "save_lora_name": "t", "train_iterations": "4",
            "train_seed": "0", "network_rank": "4", "network_alpha": "2", "train_learning_rate": "1e-3",
        }
        base.update(overrides)
        data = apply_overrides(preset, [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in base.items()])
        data["model"] = str(demo_models[family])
        job, unknown = job_from_json(data)
        assert not unknown
        return job, StandaloneHost(lora_dir=tmp_path / "out")

    return make


@pytest.fixture
def one_thread():
    """Bit-exact comparisons between runs: with several threads, CPU kernels may split their sums differently from
    run to run (measured here: the same run twice differed by 1 ulp in the second step's loss)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
