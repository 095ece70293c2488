#!/usr/bin/env bash
# Build .venv-neo, a copy of the Python environment of a Forge Neo install (2026-02; shared/spec/forge-api.md, F1
# and the Appendix): Python 3.13, torch 2.10.0 + torchvision 0.25.0, then `gradio==4.40.0 gradio_rangeslider==0.0.8`
# and Neo's requirements.txt (tools/neo_env/requirements.txt), in the order Neo's launcher installs them and with
# nothing repaired: gradio 4.40.0 declares pillow<11 and Neo pins Pillow 12.1.0, so the venv fails `pip check`, as
# Neo's does. Then run our install.py the way Neo runs an extension's installer (`"<venv python>" install.py` from
# the webui root, with PYTHONPATH=<webui root> so `import launch` finds tools/neo_env/launch.py, whose run_pip is
# Neo's plain pip) and fail if it moved any package at all. Writes .venv-neo/pins-neo.json (the bare Neo venv),
# pins-before.json (plus pytest) and pins-after.json (after install.py), which tests/test_neo_env.py reads too.
#
# torch: Neo installs 2.10.0+cu130 from download.pytorch.org, which is not reachable here, and PyPI has no CPU build
# of 2.10. PyPI's torch 2.10.0 (the CUDA 12.8 build) runs on the CPU, but only with its nvidia-* and triton
# dependencies: with `--no-deps`, `import torch` fails (libtorch_cuda.so links cuBLAS, cuDNN, NCCL, ...). So all of
# it is installed: ~3.5 GB of downloads, ~6.9 GB on disk (the venv is ~8.2 GB).
# Neo's own packages go in through uv (Neo's --uv mode: `uv pip install` for each of its `pip install`s): ~1 min
# from nothing, where pip takes ~2.5 min; the result is the same set of versions, package for package (checked:
# NEO_ENV_PIP=1 builds with pip instead). install.py runs with pip, as in Neo by default.
#
# Safe to run again: the packages are installed only when the requirements, install.py or these scripts changed (and
# then what an earlier install.py added is removed first, so install.py installs it anew); install.py (a no-op when
# nothing is missing) and the checks against pins-before.json run every time. PYTHON= picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv-neo
PY=$VENV/bin/python
FAKE=$ROOT/tools/neo_env
REQS=$FAKE/requirements.txt
PIP=("$PY" -m pip install -q --disable-pip-version-check --prefer-binary)
UV_VERSION=0.13.9

find_python() {  # python3.13 on PATH, or pyenv's 3.13 when the pyenv shim does not select it
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if python3.13 -c '' 2>/dev/null; then echo python3.13; return; fi
  local candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "setup_neo_env: no Python 3.13 found (set PYTHON=/path/to/python3.13)" >&2
  exit 1
}

neo_pip() {  # `pip install ARGS` as Neo's launcher runs it: through uv (Neo's --uv), or pip with NEO_ENV_PIP=1
  if [ "${NEO_ENV_PIP:-0}" = 1 ]; then
    "${PIP[@]}" "$@"
    return
  fi
  if [ ! -x "$VENV/.uv/bin/uv" ]; then  # kept outside the venv's site-packages
    "${PIP[@]}" --target "$VENV/.uv" "uv==$UV_VERSION"
  fi
  "$VENV/.uv/bin/uv" pip install -q --no-config --python "$PY" "$@"
}

base_ok() { "$PY" "$FAKE/pins.py" base "$1"; }  # one line and exit 1 unless torch 2.10.0 and nothing Neo lacks

if [ ! -x "$PY" ]; then
  "$(find_python)" -m venv "$VENV"
fi

stamp=$(cat "$REQS" "$ROOT/install.py" "$FAKE/launch.py" "$FAKE/pins.py" "$ROOT/tools/setup_neo_env.sh" | sha256sum | cut -c1-32)
fresh=0
timings=()
lap() { timings+=("$1 ${SECONDS}s"); SECONDS=0; }  # what each step took, printed at the end
SECONDS=0
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$VENV/pins-before.json" ]; then
  fresh=1
  rm -f "$VENV/.stamp"
  if [ -f "$VENV/pins-before.json" ]; then  # back to the bare Neo venv
    extras=$("$PY" "$FAKE/pins.py" extras "$VENV/pins-before.json")
    if [ -n "$extras" ]; then
      # shellcheck disable=SC2086
      "$PY" -m pip uninstall -q -y $extras
    fi
  fi
  # 1. Neo's TORCH_COMMAND (see above for the build).
  neo_pip torch==2.10.0 torchvision==0.25.0
  lap torch
  # 2. Neo's prepare_environment(): packaging if missing, then gradio (not in its requirements), then requirements.
  if ! "$PY" -c 'import packaging' 2>/dev/null; then
    neo_pip packaging==26.0
  fi
  neo_pip gradio==4.40.0 gradio_rangeslider==0.0.8
  neo_pip -r "$REQS"
  echo "setup_neo_env: Neo's venv fails pip check (gradio 4.40.0 wants pillow<11, Neo pins Pillow 12.1.0): that" \
    "conflict is Neo's own and is left as it is"
  "$PY" "$FAKE/pins.py" snapshot "$VENV/pins-neo.json"
  lap "gradio and requirements"
  # 3. Ours, not Neo's: the test runner. It must not move anything of Neo's either.
  "${PIP[@]}" pytest
  "$PY" "$FAKE/pins.py" snapshot "$VENV/pins-before.json"
  "$PY" "$FAKE/pins.py" check "$VENV/pins-neo.json" "$VENV/pins-before.json" "$REQS" >/dev/null \
    || { "$PY" "$FAKE/pins.py" check "$VENV/pins-neo.json" "$VENV/pins-before.json" "$REQS"; exit 1; }
  base_ok "before install.py"
  lap pytest
fi

set +e
(cd "$FAKE" && PYTHONPATH="$FAKE" "$PY" "$ROOT/install.py")
status=$?
set -e
"$PY" "$FAKE/pins.py" snapshot "$VENV/pins-after.json"
"$PY" "$FAKE/pins.py" check "$VENV/pins-before.json" "$VENV/pins-after.json" "$REQS"
lap install.py
if [ "$status" -ne 0 ]; then
  echo "setup_neo_env: install.py exited with $status"
  exit 1
fi

if [ "$fresh" = 1 ]; then
  # Every requirement of install.py, installed or not, must resolve under Neo's pins (nothing installed).
  (cd "$FAKE" && PYTHONPATH="$FAKE" "$PY" "$ROOT/install.py" --dry-run) \
    || { echo "setup_neo_env: a requirement of install.py does not resolve under Neo's pins"; exit 1; }
  echo "$stamp" > "$VENV/.stamp"
  lap "install.py --dry-run"
fi
echo "setup_neo_env: $(IFS=,; echo "${timings[*]}" | sed 's/,/, /g')"
echo "Neo environment ready: $("$PY" -c 'import importlib.metadata as m, platform; print(f"Python {platform.python_version()}, " + ", ".join(f"{n} {m.version(n)}" for n in ("torch", "gradio", "transformers", "diffusers", "numpy", "pillow")))')"
