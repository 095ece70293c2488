"""Neo modules/paths.py: the paths of modules/paths_internal.py, re-exported."""

from modules.paths_internal import (  # noqa: F401
    cwd, data_path, default_output_dir, extensions_builtin_dir, extensions_dir, models_path, script_path,
)
