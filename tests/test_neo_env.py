"""The trainer in a copy of Forge Neo's venv (.venv-neo, built by tools/setup_neo_env.sh): Python 3.13, torch 2.10.0,
Gradio 4.40.0 with Pillow 12.1.0, transformers 4.56.2, diffusers 0.36.0, numpy 2.3.5, and what install.py added.

Run there as `.venv-neo/bin/python -m pytest tests/test_neo_env.py` (tools/test_neo_env.sh does it); in any other
venv every test here is skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
IN_NEO_ENV = VENV.name == ".venv-neo" and (VENV / "pins-before.json").is_file()
pytestmark = pytest.mark.skipif(
    not IN_NEO_ENV, reason="runs only in Neo's venv: bash tools/setup_neo_env.sh, then .venv-neo/bin/python"
)

# Forge Neo (2026-02): its launcher's torch and Gradio, and the requirements.txt pins that matter to the trainer.
NEO = {"torch": "2.10.0", "torchvision": "0.25.0", "gradio": "4.40.0", "gradio-rangeslider": "0.0.8",
       "transformers": "4.56.2", "diffusers": "0.36.0", "safetensors": "0.7.0", "numpy": "2.3.5",
       "pillow": "12.1.0", "pydantic": "2.10.6", "pydantic-core": "2.27.2", "fastapi": "0.127.1",
       "huggingface-hub": "0.34.6", "accelerate": "1.12.0", "peft": "0.17.1", "lightning": "2.5.6",
       "einops": "0.8.2", "protobuf": "4.25.8", "opencv-python": "4.10.0.84", "audioop-lts": "0.2.2"}
# Not installed by Neo; install.py adds them (open-clip-torch without its dependencies).
ADDED = ("open-clip-torch", "bitsandbytes", "lycoris-lora", "prodigyopt", "dadaptation", "schedulefree",
         "pytorch-optimizer", "lion-pytorch")


def _snapshot(name: str) -> dict[str, str]:
    return json.loads((VENV / name).read_text(encoding="utf-8"))["packages"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _install_py():
    return _load("traintrain_install", ROOT / "install.py")


def _pins_tool():
    return _load("neo_pins", ROOT / "tools" / "neo_env" / "pins.py")


def test_this_is_neos_venv_with_its_pillow_conflict_left_alone():
    from packaging.requirements import Requirement

    assert platform.python_version_tuple()[:2] == ("3", "13")
    before = _snapshot("pins-before.json")
    for name, version in NEO.items():
        assert before[name] == version, name
        assert importlib.metadata.version(name).split("+")[0] == version  # this interpreter runs that set
    pinned = _pins_tool().pins(ROOT / "tools" / "neo_env" / "requirements.txt")
    assert {k: before.get(k) for k in pinned} == pinned  # every line of Neo's requirements.txt
    for name in ADDED:
        assert name not in before, f"{name} was there before install.py; Neo does not install it"
    # F1: gradio 4.40.0 declares pillow<11 while Neo pins Pillow 12.1.0; pip warns, and nothing repairs it.
    pillow = [Requirement(r) for r in importlib.metadata.requires("gradio") if r.lower().startswith("pillow")]
    assert pillow and not pillow[0].specifier.contains("12.1.0")
    assert "nvidia-cudnn-cu12" in before  # PyPI's torch 2.10.0 is a CUDA build (it runs on the CPU)


def test_install_py_moved_nothing_and_added_its_packages_at_their_pins():
    install = _install_py()
    before, after = _snapshot("pins-before.json"), _snapshot("pins-after.json")
    assert {k: after.get(k) for k in before} == before, "install.py moved a package of Neo's venv"
    added = set(after) - set(before)
    assert set(ADDED) <= added
    wanted = {_pins_tool().canonical(r.split("==")[0]): r.split("==")[1]
              for r in [*install.requirements(install.torch_version()).values(), *install.NO_DEPS.values()]}
    for dist in ADDED:
        assert after[dist] == wanted[dist], f"install.py installed {dist} {after[dist]}, not {wanted[dist]}"
    assert added - set(ADDED) == {"toml"}, added  # lycoris-lora's one dependency that Neo lacks


def test_install_py_guards_what_neo_ships():
    """F1: an extension never touches torch, gradio, transformers, diffusers, numpy, Pillow, pydantic, safetensors;
    Neo also ships peft, gradio_rangeslider and the rest of its requirements.txt."""
    install = _install_py()
    guarded = {_pins_tool().canonical(n) for n in install.GUARDED}
    for name in ("torch", "torchvision", "gradio", "gradio-rangeslider", "transformers", "diffusers", "numpy",
                 "pillow", "pydantic", "pydantic-core", "safetensors", "peft", "accelerate", "huggingface-hub"):
        assert name in guarded, name
    constraints = install.guard_constraints().splitlines()
    for name in ("diffusers", "peft", "gradio_rangeslider", "transformers", "Pillow"):
        version = importlib.metadata.version(name)
        assert f"{name}=={version}" in constraints


def test_install_py_requirements_accept_neos_pins():
    """Every package install.py added accepts Neo's torch, numpy, transformers, diffusers … as they are."""
    from packaging.requirements import Requirement

    added = set(_snapshot("pins-after.json")) - set(_snapshot("pins-before.json"))
    neo = _snapshot("pins-before.json")
    for dist in sorted(added - {"open-clip-torch"}):  # open-clip-torch goes in with --no-deps, for its vocabulary
        for line in importlib.metadata.requires(dist) or []:
            req = Requirement(line)
            name = _pins_tool().canonical(req.name)
            if name not in neo or (req.marker and not req.marker.evaluate({"extra": ""})):
                continue
            assert req.specifier.contains(neo[name], prereleases=True), f"{dist} requires {req}, not {name} {neo[name]}"


def test_the_trainer_imports_and_finds_what_it_needs():
    import gradio
    import numpy
    import PIL

    import trainer.runner  # noqa: F401  (models, engine, networks, data, modes)
    import trainer.ui.tab  # noqa: F401
    from trainer.models.tokenizer import bpe_vocabulary_path
    from trainer.packages import problems

    assert gradio.__version__ == "4.40.0" and numpy.__version__ == "2.3.5" and PIL.__version__ == "12.1.0"
    assert bpe_vocabulary_path().is_file()  # open_clip_torch, installed --no-deps: its vocabulary file only
    assert problems() == ""  # every required and optional package is there


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


def test_loha_with_8bit_adamw_and_gradient_checkpointing_trains(lora_job):
    """lycoris-lora and bitsandbytes as install.py added them, transformers 4.56's checkpointing in the text encoder."""
    from trainer.networks.io import read_lora
    from trainer.runner import run_job

    job, host = lora_job(train_iterations="2", network_type="loha", train_optimizer="AdamW8bit",
                         use_gradient_checkpointing="true", save_lora_name="gc")
    result = run_job(job, host)
    assert result.status == "finished", result.message
    tensors, _ = read_lora(result.path)
    assert any(".hada_w1_a" in k for k in tensors)
    te = [v for k, v in tensors.items() if k.startswith("lora_te_") and "hada_w2_a" in k]
    assert te and all(v.abs().sum() > 0 for v in te)
