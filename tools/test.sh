#!/usr/bin/env bash
# Every test, from a fresh machine: the standalone environment (.venv) with Chromium for the browser tests, then the
# webui's pinned environment (.venv-webui, built the way the webui builds its venv, plus what install.py adds).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
bash tools/setup.sh
bash tools/setup_browser.sh
.venv/bin/python -m pytest -q -n 2 --dist loadfile  # one worker per core; a test file stays in one worker
bash tools/test_webui_env.sh
bash tools/test_neo_env.sh
