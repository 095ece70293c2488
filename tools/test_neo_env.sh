#!/usr/bin/env bash
# The trainer in a copy of Forge Neo's venv: build or check .venv-neo (tools/setup_neo_env.sh, which runs install.py
# as Neo does and fails if it moved any package), then a short set of tests there: Neo's pins and what install.py
# added (tests/test_neo_env.py, with two short training runs), the tab registered by the extension and built under
# Gradio 4.40 (fake A1111 and fake Forge Neo starts, the in-process tab tests), a job through the Forge Neo host
# (tests/fake_forge) and every optimizer install.py added; and the browser tests (tests/test_ui_browser.py: the
# standalone page, the tab in the fake A1111 and fake Forge Neo pages) under Gradio 4.40.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_neo_env.sh
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# playwright (which drives the system Chromium for the browser tests) and pytest-xdist are ours, not Neo's: they go
# into a folder of their own, on PYTHONPATH for these tests only, never into Neo's venv; greenlet only if Neo lacks it.
TOOLS_DIR=.venv-neo-playwright
if ! PYTHONPATH="$TOOLS_DIR" .venv-neo/bin/python -c "import playwright.sync_api, xdist" 2>/dev/null; then
  rm -rf "$TOOLS_DIR"
  extra=()
  .venv-neo/bin/python -c "import greenlet" 2>/dev/null || extra=("greenlet>=3.1.1,<4")
  .venv-neo/bin/python -m pip install -q --disable-pip-version-check --no-deps --target "$TOOLS_DIR" \
    playwright==1.65.2 pytest-xdist==3.8.0 execnet==2.1.2 "${extra[@]}"
fi
export PYTHONPATH="$TOOLS_DIR"
exec .venv-neo/bin/python -m pytest -q -n 2 --dist loadfile tests/test_neo_env.py tests/test_ui_browser.py \
  tests/test_webui_extension.py::test_the_tab_registers_and_builds \
  tests/test_webui_extension.py::test_the_tab_registers_and_builds_in_forge_neo tests/test_ui_form.py \
  "tests/test_forge_host.py::test_a_job_trains_on_the_held_model[forge-sd1-LoRA]" \
  "tests/test_forge_host.py::test_progress_the_lora_list_and_the_queue_lock[forge]" \
  "tests/test_optim.py::test_every_optimizer_takes_two_steps" "$@"
