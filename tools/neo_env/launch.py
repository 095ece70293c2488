"""Stand-in for Forge Neo's `launch` module, for running our install.py as Neo would.

tools/setup_neo_env.sh runs `"<venv python>" install.py` with this folder as the working directory and on
PYTHONPATH, as Neo's `run_extension_installer` does (PYTHONPATH=<webui root>, the installer run from the webui root;
shared/spec/forge-api.md F1, N:modules/launch_utils.py). What an extension's install.py may use is here, with
Neo's behaviour:

- `is_installed(package)`: importlib.metadata.distribution(package), falling back to importlib.util.find_spec;
  versions are ignored.
- `run_pip(args, desc)`: prints "Installing <desc>", runs `"<python>" -m pip <args> --prefer-binary` (plus
  `--index-url $INDEX_URL` when set) through the shell, output captured unless WEBUI_LAUNCH_LIVE_OUTPUT=1, raises
  RuntimeError with the command, exit code and output when pip fails, and does nothing under --skip-install.
- `git_clone`, `run_git` (and `git_fix_workspace`): raise NotImplementedError, as in Neo.
- `args`: `skip_install`, `uv` and `uv_symlink` are False (no --uv hook: plain pip, Neo's default).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"
args = SimpleNamespace(skip_install=False, uv=False, uv_symlink=False)


def run(command: str, desc: str | None = None, errdesc: str | None = None, custom_env=None,
        live: bool = default_command_live) -> str:
    if desc is not None:
        print(desc, flush=True)
    kwargs = {"args": command, "shell": True, "env": os.environ if custom_env is None else custom_env,
              "encoding": "utf8", "errors": "ignore"}
    if not live:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    result = subprocess.run(**kwargs, check=False)
    if result.returncode != 0:
        lines = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            lines.append(f"stdout: {result.stdout}")
        if result.stderr:
            lines.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(lines))
    return result.stdout or ""


def is_installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            return False


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str | None:
    if args.skip_install:
        return None
    index_url_line = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index_url_line}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)


def git_fix_workspace(*args, **kwargs):
    raise NotImplementedError()


def run_git(*args, **kwargs):
    raise NotImplementedError()


def git_clone(*args, **kwargs):
    raise NotImplementedError()
