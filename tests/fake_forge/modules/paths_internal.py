"""Neo modules/paths_internal.py: paths only, safe to import early (FAKE_FORGE_ROOT is the data dir)."""

import os
import tempfile

script_path = os.environ.get("FAKE_FORGE_ROOT", tempfile.gettempdir())
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
cwd = os.getcwd()
