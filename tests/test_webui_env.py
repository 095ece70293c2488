"""The trainer in a copy of the webui v1.10.1 venv (.venv-webui, built by tools/setup_webui_env.sh).

Run there as `.venv-webui/bin/python -m pytest tests/test_webui_env.py` (tools/test_webui_env.sh does it); in any
other venv every test here is skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
IN_WEBUI_ENV = VENV.name == ".venv-webui" and (VENV / "pins-before.json").is_file()
pytestmark = pytest.mark.skipif(
    not IN_WEBUI_ENV, reason="runs only in the webui's venv: bash tools/setup_webui_env.sh, then .venv-webui/bin/python"
)

# What a webui v1.10.1 venv has (requirements_versions.txt and what pip resolves), and what must not move.
WEBUI = {"transformers": "4.30.2", "tokenizers": "0.13.3", "huggingface-hub": "0.36.2", "safetensors": "0.4.2",
         "numpy": "1.26.2", "pillow": "9.5.0", "accelerate": "0.21.0", "gradio": "3.41.2", "fastapi": "0.94.0"}
GUARDED = ("torch", "transformers", "gradio", "numpy", "pillow", "safetensors", "huggingface-hub", "pydantic",
           "accelerate", "fastapi", "tokenizers")


def _snapshot(name: str) -> dict[str, str]:
    return json.loads((VENV / name).read_text(encoding="utf-8"))["packages"]


def _install_py():
    spec = importlib.util.spec_from_file_location("traintrain_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins_tool():
    spec = importlib.util.spec_from_file_location("webui_pins", ROOT / "tools" / "webui_env" / "pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_py_moved_no_pin_and_the_pins_are_the_webuis():
    before, after = _snapshot("pins-before.json"), _snapshot("pins-after.json")
    pinned = _pins_tool().pins(ROOT / "tools" / "webui_env" / "constraints.txt")
    for name in sorted(set(GUARDED) | set(pinned)):
        assert before.get(name) == after.get(name), f"install.py moved {name}"
    for name, version in WEBUI.items():
        assert after[name] == version
        assert importlib.metadata.version(name) == version  # this interpreter really runs the old set
    assert after["pydantic"].startswith("1.10.") and after["torch"] == "2.13.0+cpu"
    assert not any(n.startswith("nvidia-") for n in after), "a CUDA build came in"


def test_install_py_added_its_packages_at_their_pins():
    install = _install_py()
    before, after = _snapshot("pins-before.json"), _snapshot("pins-after.json")
    wanted = install.requirements(install.torch_version())
    for requirement in wanted.values():
        dist, version = requirement.split("==")
        dist = _pins_tool().canonical(dist)
        assert dist in after, f"{requirement} is not installed"
        if dist not in before:  # installed by install.py (a webui venv already has pandas, matplotlib)
            assert after[dist] == version, f"install.py installed {dist} {after[dist]}, not {version}"
    assert "diffusers" in wanted and "lycoris" in wanted


def test_install_py_requirements_accept_the_webuis_own_torch():
    """The real webui runs torch 2.1.2: every package install.py adds must accept it (and our 2.13.0)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    install = _install_py()
    assert install.requirements((2, 1))["bitsandbytes"] == "bitsandbytes==0.45.5"  # the last one for torch 2.0–2.3
    added = set(_snapshot("pins-after.json")) - set(_snapshot("pins-before.json"))
    webui = {"torch": ["2.1.2", "2.13.0"], **{k: [v] for k, v in WEBUI.items()}}
    for dist in sorted(added):
        for line in importlib.metadata.requires(dist) or []:
            req = Requirement(line)
            name = _pins_tool().canonical(req.name)
            if name not in webui or (req.marker and not req.marker.evaluate({"extra": ""})):
                continue
            for version in webui[name]:
                if dist == "bitsandbytes" and name == "torch" and Version(version) < Version("2.4"):
                    continue  # install.py picks 0.45.5 (torch>=2.0) for a torch below 2.4
                assert req.specifier.contains(version, prereleases=True), f"{dist} requires {req}, not {name} {version}"


def test_lora_run_writes_a_file_every_loader_reads(lora_job, demo_models):
    from trainer.networks.io import inspect_lora, read_lora
    from trainer.runner import run_job

    job, host = lora_job(train_iterations="4")
    result = run_job(job, host)
    assert result.status == "finished" and len(result.losses) == 4
    report = inspect_lora(result.path, model=demo_models["sd1"])
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    tensors, meta = read_lora(result.path)
    assert any(k.startswith("lora_te_") for k in tensors) and any(k.startswith("lora_unet_") for k in tensors)
    assert meta["ss_network_module"] == "networks.lora"


def test_text_encoder_lora_trains_with_gradient_checkpointing(lora_job):
    """transformers 4.30 checkpoints reentrantly: the text encoder's LoRA must still get gradients."""
    from trainer.networks.io import read_lora
    from trainer.runner import run_job

    job, host = lora_job(train_iterations="2", use_gradient_checkpointing="true", save_lora_name="gc")
    tensors, _ = read_lora(run_job(job, host).path)
    te_up = [v for k, v in tensors.items() if k.startswith("lora_te_") and k.endswith("lora_up.weight")]
    assert te_up and all(v.abs().sum() > 0 for v in te_up)  # lora_up starts at zero
