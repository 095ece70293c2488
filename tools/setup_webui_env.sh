#!/usr/bin/env bash
# Build .venv-webui, a copy of the Python environment of a webui v1.10.1 install (tools/webui_env/constraints.txt:
# its pins plus the versions it resolves; CPU torch 2.13.0 stands in for its torch), then run our install.py in it
# exactly as the webui runs an extension's installer (`"<venv python>" install.py` from the webui root, with
# PYTHONPATH=<webui root> so `import launch` finds tools/webui_env/launch.py) and fail if any pinned version moved.
# Writes .venv-webui/pins-before.json (the bare webui venv) and pins-after.json (after install.py), which
# tests/test_webui_env.py reads too.
#
# Safe to run again: the pins are installed only when constraints.txt, install.py or these scripts changed (and
# then what an earlier install.py added is removed first, so install.py installs it anew); install.py (a no-op when
# nothing is missing) and the checks against pins-before.json run every time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv-webui
PY=$VENV/bin/python
FAKE=$ROOT/tools/webui_env
PINS=$FAKE/constraints.txt
PYTHON=${PYTHON:-python3.11}
PIP=("$PY" -m pip install -q --disable-pip-version-check)

torch_ok() { "$PY" "$FAKE/pins.py" torch "$1"; }  # one line and exit 1 unless torch is still CPU 2.13.0

if [ ! -x "$PY" ]; then
  "$PYTHON" -m venv "$VENV"
fi

stamp=$(cat "$PINS" "$ROOT/install.py" "$FAKE/launch.py" "$FAKE/pins.py" "$ROOT/tools/setup_webui_env.sh" | sha256sum | cut -c1-32)
fresh=0
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$VENV/pins-before.json" ]; then
  fresh=1
  rm -f "$VENV/.stamp"
  if [ -f "$VENV/pins-before.json" ]; then  # back to the bare webui venv
    extras=$("$PY" "$FAKE/pins.py" extras "$VENV/pins-before.json")
    if [ -n "$extras" ]; then
      # shellcheck disable=SC2086
      "$PY" -m pip uninstall -q -y $extras
    fi
  fi
  # torch first, from the CPU wheel: nothing after this may bring another build.
  "${PIP[@]}" torch==2.13.0
  torch_ok "after installing torch"
  "${PIP[@]}" -c "$PINS" -r "$PINS" pytest pytest-xdist==3.8.0
  torch_ok "after installing the webui's pins"
  # The webui pins open-clip-torch 2.20.0; its torchvision requirement would replace the CPU torch.
  "${PIP[@]}" --no-deps open-clip-torch==2.20.0
  torch_ok "after installing open-clip-torch"
  "$PY" "$FAKE/pins.py" snapshot "$VENV/pins-before.json"
fi

set +e
(cd "$FAKE" && PYTHONPATH="$FAKE" "$PY" "$ROOT/install.py")
status=$?
set -e
"$PY" "$FAKE/pins.py" snapshot "$VENV/pins-after.json"
torch_ok "after install.py"
"$PY" "$FAKE/pins.py" check "$VENV/pins-before.json" "$VENV/pins-after.json" "$PINS"
if [ "$status" -ne 0 ]; then
  echo "setup_webui_env: install.py exited with $status"
  exit 1
fi

if [ "$fresh" = 1 ]; then
  # Every requirement of install.py, installed or not, must resolve under the webui's pins (nothing installed).
  (cd "$FAKE" && PYTHONPATH="$FAKE" "$PY" "$ROOT/install.py" --dry-run) \
    || { echo "setup_webui_env: a requirement of install.py does not resolve under the webui's pins"; exit 1; }
  echo "$stamp" > "$VENV/.stamp"
fi
echo "webui environment ready: $("$PY" -c 'import importlib.metadata as m; print(", ".join(f"{n} {m.version(n)}" for n in ("torch", "transformers", "diffusers", "huggingface_hub", "safetensors")))')"
