#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned standalone/test environment. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
# Only its CLIP vocabulary file is used; its torchvision dependency would swap torch for a CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps open_clip_torch==2.20.0
.venv/bin/python - <<'PY'
import torch
assert "+cpu" in torch.__version__ or not torch.version.cuda, f"torch {torch.__version__} is not the CPU build"
print(f"environment ready: torch {torch.__version__}")
PY
