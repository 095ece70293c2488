"""The fake webui inside the test process: `with fake_webui_modules(ckpt_dir, lora_dir) as webui: ...`.

Puts tests/fake_webui on sys.path, sets the FAKE_WEBUI_* environment, imports the fake `modules` fresh, applies
`cmd_opts` / `opts` overrides and loads the built-in Lora extension (so `import networks` works, as in the webui). On
exit every module it brought in is forgotten — `modules`, `modules.*`, `webui`, `fake_ldm`, the Lora extension's bare
modules (`networks`, `network`, `lora_patches`), and any module imported meanwhile that holds one of them (e.g.
`trainer.host.webui`, which does `from modules import shared`) — the Lora extension's torch patches are undone and
sys.path / the environment are restored, so other tests never see them.

The yielded namespace has the modules as attributes: shared, sd_models, sd_hijack, prompt_parser, processing,
lowvram, devices, call_queue, script_callbacks, webui, fake_ldm, networks (None without `builtin_lora`)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("shared", "sd_models", "sd_models_xl", "sd_hijack", "prompt_parser", "processing", "lowvram", "devices",
           "call_queue", "script_callbacks", "sd_vae", "paths_internal", "ui_loadsave", "scripts")


def _ours(name: str, module) -> bool:
    if name == "modules" or name.startswith("modules."):
        return True
    if module is sys.modules.get(__name__):
        return False
    filename = getattr(module, "__file__", None) or ""
    return bool(filename) and Path(filename).resolve().is_relative_to(HERE)


def forget_fake_webui(before: set[str] | None = None) -> dict:
    """Drop the fake webui's modules from sys.modules (and, of those imported after `before`, the ones that hold a
    reference to one of them). Returns them, by name."""
    dropped = {name: m for name, m in list(sys.modules.items()) if m is not None and _ours(name, m)}
    changed = before is not None
    saved_filters = list(warnings.filters)
    while changed:  # modules imported meanwhile that hold a dropped module, transitively
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
def fake_webui_modules(ckpt_dir, lora_dir, *, root=None, vae_dir=None, ui_config=None, cmd_opts=None, opts=None,
                       builtin_lora=True):
    """The fake webui's modules, imported fresh; `cmd_opts` / `opts`: dicts of overrides (e.g. {"medvram": True}).
    `root` (FAKE_WEBUI_ROOT, the data dir) defaults to the parent of `lora_dir`; ui-config.json goes there unless
    `ui_config` names another file. Inside another fake_webui_modules block, the outer one's modules are set aside
    meanwhile and put back afterwards."""
    existing = sys.modules.get("modules")
    if existing is not None and not _ours("", existing):  # judged by its file: a real webui's `modules`
        raise RuntimeError(f"another `modules` package is imported already: {existing!r}")
    outer = forget_fake_webui()
    before = set(sys.modules)
    root = Path(root) if root is not None else Path(lora_dir).parent
    env = {"FAKE_WEBUI_ROOT": str(root), "FAKE_WEBUI_CKPT_DIR": str(ckpt_dir), "FAKE_WEBUI_LORA_DIR": str(lora_dir),
           "FAKE_WEBUI_VAE_DIR": str(vae_dir) if vae_dir else None,
           "FAKE_WEBUI_UI_CONFIG": str(ui_config) if ui_config else None,
           "FAKE_WEBUI_BUILTIN": None if builtin_lora else "0"}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_path = list(sys.path)
    namespace = None
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
        namespace = types.SimpleNamespace(**{name: importlib.import_module(f"modules.{name}") for name in MODULES})
        namespace.webui = importlib.import_module("webui")
        namespace.fake_ldm = importlib.import_module("fake_ldm")
        namespace.networks = sys.modules.get("networks")  # webui's import loaded the built-in Lora extension
        yield namespace
    finally:
        networks = sys.modules.get("networks")
        originals = getattr(networks, "originals", None)
        if originals is not None:
            originals.undo()
        lowvram = sys.modules.get("modules.lowvram")
        if lowvram is not None:
            lowvram.module_in_gpu = None
        forget_fake_webui(before)
        sys.modules.update(outer)
        sys.path[:] = saved_path
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
