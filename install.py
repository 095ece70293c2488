"""Run by the webui (in its own venv) before it starts: install only what is missing.

A package below is installed only when it cannot be imported at all; nothing already installed is upgraded,
downgraded or reinstalled, and torch is never installed. Each version was checked against the Python
environment of a webui v1.10.1 install (torch 2.1.2 there, transformers 4.30.2, tokenizers 0.13.3,
huggingface_hub 0.36.2, safetensors 0.4.2, numpy 1.26.2, Pillow 9.5.0, accelerate 0.21.0, gradio 3.41.2,
pydantic 1.10): its own requirements accept all of them, so pip has nothing to change.
tools/setup_webui_env.sh replays that: it builds a copy of that venv, runs this file the way the webui does and
fails if any pinned version moved.

As a second guard every pip call gets a constraints file holding the installed version of each package in
GUARDED, so pip cannot move one even in a venv that differs from v1.10.1's (another webui release, an older
huggingface_hub); a package that would need that is left out and a line says so (exit code 1, which the webui
only reports). `python install.py --dry-run` (with the webui's `launch` importable) asks pip to resolve every
requirement, present or not, under the same constraints, and installs nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile

# The webui's pinned or resolved packages (and what its own code needs): never changed by this file.
GUARDED = (
    "torch", "torchvision", "xformers", "transformers", "tokenizers", "huggingface_hub", "safetensors", "numpy",
    "Pillow", "accelerate", "gradio", "gradio_client", "fastapi", "starlette", "pydantic", "httpx", "httpcore",
    "protobuf", "open-clip-torch", "omegaconf", "einops", "psutil", "setuptools", "pytorch_lightning", "kornia",
    "scikit-image", "spandrel", "timm",
)


def torch_version() -> tuple[int, int] | None:
    try:
        match = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return (int(match.group(1)), int(match.group(2))) if match else None


def requirements(torch: tuple[int, int]) -> dict[str, str]:
    """import name → pip requirement. Requirements that allow a range of a guarded package say which."""
    return {
        # huggingface_hub>=0.34 (<2), safetensors>=0.3.1, numpy, Pillow: unversioned. Loading and training use
        # its models and single-file converters, which work with transformers 4.30.2; its pipelines need a
        # newer transformers, and the trainer does not use them.
        "diffusers": "diffusers==0.35.2",
        # torch, einops, numpy, safetensors, tqdm, toml: unversioned (LoHa works with the webui's einops 0.4.1).
        "lycoris": "lycoris-lora==4.1.3",
        # 0.46+ require torch>=2.2 and 0.48+ torch>=2.3; 0.45.5 is the last that accepts the webui's torch 2.1.2.
        "bitsandbytes": "bitsandbytes==0.50.2" if torch >= (2, 4) else "bitsandbytes==0.45.5",
        "prodigyopt": "prodigyopt==1.1.2",  # no requirements
        "dadaptation": "dadaptation==3.2",  # no requirements
        "schedulefree": "schedulefree==1.4.1",  # torch, typing-extensions: unversioned
        "pytorch_optimizer": "pytorch-optimizer==4.1.0",  # torch>=2.1, numpy>1.24.4
        "lion_pytorch": "lion-pytorch==0.2.5",  # torch>=1.6
        # gradio 3.41.2 already brings both; these matter only in a venv that lost them (they also run on
        # the Python 3.10 most webui installs use).
        "pandas": "pandas==2.3.3",  # numpy>=1.22.4
        "matplotlib": "matplotlib==3.10.7",  # numpy>=1.23, pillow>=8
    }


# Installed without dependencies: its torchvision/timm requirements could replace the webui's torch, and only its
# CLIP vocabulary file is used. The webui pins this same version, so it is normally present.
NO_DEPS = {"open_clip": "open_clip_torch==2.20.0"}


def missing(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is None
    except (ImportError, ValueError):
        return True


def guard_constraints() -> str:
    """`name==version` for every installed GUARDED package (pip's constraints-file syntax)."""
    lines = []
    for name in GUARDED:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version or ""):
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import launch  # the webui's module (PYTHONPATH is the webui root); present only when the webui runs this

    dry_run = "--dry-run" in argv
    torch = torch_version()
    if torch is None:
        print("TrainTrain: torch is not installed in this venv; installing nothing (the webui installs torch)")
        return 1
    wanted = [(name, req, "") for name, req in requirements(torch).items() if dry_run or missing(name)]
    wanted += [(name, req, "--no-deps ") for name, req in NO_DEPS.items() if dry_run or missing(name)]
    if not wanted:
        return 0

    failed = []
    fd, constraints = tempfile.mkstemp(prefix="traintrain-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(guard_constraints())
        for name, req, flags in wanted:
            args = f'install {"--dry-run " if dry_run else ""}{flags}-c "{constraints}" "{req}"'
            try:
                out = launch.run_pip(args, f"TrainTrain requirement: {req}")
            except RuntimeError as err:
                reason = [ln.strip() for ln in str(err).splitlines() if ln.strip().startswith("ERROR:")]
                failed.append(name)
                print(f"TrainTrain: could not install {req} without changing the webui's packages"
                      f"{': ' + reason[0] if reason else ''}")
                continue
            if dry_run and out:
                print("".join(ln for ln in out.splitlines(True) if ln.startswith("Would install")), end="")
    finally:
        os.unlink(constraints)
    if failed:
        print(f"TrainTrain: not installed: {', '.join(failed)} (the features that need them will say so)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
