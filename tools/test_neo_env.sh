#!/usr/bin/env bash
# The trainer in a copy of Forge Neo's venv: build or check .venv-neo (tools/setup_neo_env.sh, which runs install.py
# as Neo does and fails if it moved any package), then a short set of tests there: Neo's pins and what install.py
# added (tests/test_neo_env.py, with two short training runs), the tab registered by the extension and built under
# Gradio 4.40 (fake A1111 and fake Forge Neo starts, the in-process tab tests), a job through the Forge Neo host
# (tests/fake_forge) and every optimizer install.py added.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_neo_env.sh
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv-neo/bin/python -m pytest -q tests/test_neo_env.py \
  tests/test_webui_extension.py::test_the_tab_registers_and_builds \
  tests/test_webui_extension.py::test_the_tab_registers_and_builds_in_forge_neo tests/test_ui_form.py \
  "tests/test_forge_host.py::test_a_job_trains_on_the_held_model[forge-sd1-LoRA]" \
  "tests/test_forge_host.py::test_progress_the_lora_list_and_the_queue_lock[forge]" \
  "tests/test_optim.py::test_every_optimizer_takes_two_steps" "$@"
