"""The fake Forge Neo inside the test process: `with fake_forge_modules(ckpt_dir, lora_dir) as forge: ...`.

Puts tests/fake_forge on sys.path, sets the FAKE_FORGE_* environment, imports the fake `modules`, `modules_forge` and
`backend` fresh, applies `cmd_opts` / `opts` overrides and starts the fake webui (`webui.py`: the vendored packages on
sys.path, the built-in Lora extension loaded, so `import networks` works). Nothing is loaded: `shared.sd_model` is a
FakeInitialModel and `model_data.forge_loading_parameters` is {} until `main_entry.refresh_model_loading_parameters()`
(or `webui.create_ui()`). On exit every module it brought in is forgotten — `modules*`, `modules_forge*`, `backend*`,
`webui`, `huggingface_guess`, the Lora extension's bare modules (`networks`, `network`), and any module imported
meanwhile that holds one of them (e.g. the trainer's host module, which does `from modules import shared`) — the
gradio shims are undone and sys.path / the environment are restored.

Refuses to start while another `modules` package (a real webui's, or tests/fake_webui's) is imported; after its
block has ended, the fake A1111 (`tests/fake_webui/inprocess.py`) can run again in the same process, and vice versa.

The yielded namespace has the modules as attributes: shared, shared_state, sd_models, processing, devices,
call_queue, script_callbacks, paths_internal, scripts, ui_loadsave, ui_components, ui_common, memory_management,
backend_utils, loader, main_entry, main_thread, engine_base (backend.diffusion_engine.base), webui, networks (None
without `builtin_lora`)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("shared", "shared_state", "sd_models", "processing", "devices", "call_queue", "script_callbacks",
           "paths_internal", "scripts", "ui_loadsave", "ui_components", "ui_common")
OTHER = {"memory_management": "backend.memory_management", "backend_utils": "backend.utils",
         "loader": "backend.loader", "main_entry": "modules_forge.main_entry",
         "main_thread": "modules_forge.main_thread", "engine_base": "backend.diffusion_engine.base"}
PACKAGES = ("modules", "modules_forge", "backend")


def _file_is_ours(module) -> bool:
    filename = getattr(module, "__file__", None) or ""
    if not filename or "fake_forge" not in filename:  # (cheap test first: this runs for every module)
        return False
    return Path(filename).resolve().is_relative_to(HERE)


def _ours(name: str, module) -> bool:
    if module is sys.modules.get(__name__):
        return False
    if any(name == p or name.startswith(p + ".") for p in PACKAGES):
        return _file_is_ours(module) or getattr(module, "__file__", None) is None
    return _file_is_ours(module)


def forget_fake_forge(before: set[str] | None = None) -> dict:
    """Drop the fake Forge's modules from sys.modules (and, of those imported after `before`, the ones that hold a
    reference to one of them, transitively). Returns them, by name."""
    dropped = {name: m for name, m in list(sys.modules.items()) if m is not None and _ours(name, m)}
    changed = before is not None
    saved_filters = list(warnings.filters)
    while changed:
        changed = False
        warnings.filterwarnings("ignore", category=FutureWarning)  # (reading deprecated module attributes)
        held = {id(m) for m in dropped.values()}
        for name, module in list(sys.modules.items()):
            if name in before or name in dropped or module is None:
                continue
            if any(id(v) in held for v in list(getattr(module, "__dict__", {}).values())
                   if isinstance(v, types.ModuleType)):
                dropped[name] = module
                changed = True
    warnings.filters[:] = saved_filters
    for name in dropped:
        sys.modules.pop(name, None)
    return dropped


@contextlib.contextmanager
def fake_forge_modules(ckpt_dir, lora_dir, *, root=None, ui_config=None, cmd_opts=None, opts=None,
                       builtin_lora=True):
    """The fake Forge Neo's modules, imported fresh; `ckpt_dir` becomes `cmd_opts.ckpt_dirs = [ckpt_dir]`,
    `lora_dir` `cmd_opts.lora_dir`; `cmd_opts` / `opts`: dicts of overrides. `root` (FAKE_FORGE_ROOT, the data
    dir: models/, ui-config.json, …) defaults to the parent of `lora_dir`. Inside another fake_forge_modules block,
    the outer one's modules are set aside meanwhile and put back afterwards."""
    for package in PACKAGES:
        existing = sys.modules.get(package)
        if existing is not None and not _file_is_ours(existing):
            raise RuntimeError(f"another `{package}` package is imported already: {existing!r}")
    outer = forget_fake_forge()
    before = set(sys.modules)
    root = Path(root) if root is not None else Path(lora_dir).parent
    env = {"FAKE_FORGE_ROOT": str(root), "FAKE_FORGE_CKPT_DIR": str(ckpt_dir) if ckpt_dir else None,
           "FAKE_FORGE_LORA_DIR": str(lora_dir), "FAKE_FORGE_UI_CONFIG": str(ui_config) if ui_config else None,
           "FAKE_FORGE_BUILTIN": None if builtin_lora else "0"}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_path = list(sys.path)
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path.insert(0, str(HERE))
        importlib.invalidate_caches()
        from modules import shared

        for key, value in (cmd_opts or {}).items():
            setattr(shared.cmd_opts, key, value)
        for key, value in (opts or {}).items():
            shared.opts.data[key] = value
        if cmd_opts and "ckpt_dirs" in cmd_opts:
            importlib.import_module("modules.sd_models").list_models()
        namespace = types.SimpleNamespace(**{name: importlib.import_module(f"modules.{name}") for name in MODULES})
        namespace.webui = importlib.import_module("webui")
        for name, module in OTHER.items():
            setattr(namespace, name, importlib.import_module(module))
        namespace.networks = sys.modules.get("networks")  # webui's import loaded the built-in Lora extension
        yield namespace
    finally:
        extensions = sys.modules.get("modules.gradio_extensions")
        if extensions is not None:
            extensions.undo()
        forget_fake_forge(before)
        sys.modules.update(outer)
        sys.path[:] = saved_path
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
