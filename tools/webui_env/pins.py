"""Snapshots of a venv's installed versions and the checks tools/setup_webui_env.sh makes (standard library only).

    python pins.py snapshot OUT.json                   every installed distribution → version
    python pins.py check BEFORE.json AFTER.json PINS   fail if a pinned package is not at its pin or moved
    python pins.py torch WHEN                          fail unless torch is the CPU 2.13.0 build (no CUDA pulled)
    python pins.py extras BEFORE.json                  names installed now that BEFORE.json does not list

Failures print one line starting with "setup_webui_env:" and exit with code 1.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import sys
from pathlib import Path

# Must never move when install.py runs (every line of constraints.txt is checked too).
GUARDED = ("torch", "transformers", "gradio", "numpy", "pillow", "safetensors", "huggingface-hub", "pydantic",
           "accelerate", "fastapi", "tokenizers")
TORCH = "2.13.0+cpu"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def pins(path: str | Path) -> dict[str, str]:
    """name → version from `name==version` lines (comments and other lines ignored)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def same_release(installed_version: str | None, pinned: str) -> bool:
    """`==pinned` as pip reads it: a local label (+cpu) on the installed version is ignored unless pinned."""
    if installed_version is None:
        return False
    return installed_version == pinned or ("+" not in pinned and installed_version.split("+")[0] == pinned)


def fail(message: str) -> None:
    print(f"setup_webui_env: {message}")
    sys.exit(1)


def main(argv: list[str]) -> None:
    command, rest = argv[0], argv[1:]
    if command == "snapshot":
        data = {"python": platform.python_version(), "packages": dict(sorted(installed().items()))}
        Path(rest[0]).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    elif command == "check":
        before, after = (json.loads(Path(p).read_text(encoding="utf-8"))["packages"] for p in rest[:2])
        pinned = pins(rest[2])
        names = sorted(set(GUARDED) | set(pinned))
        moved = [f"{n} {before.get(n)} -> {after.get(n)}" for n in names if before.get(n) != after.get(n)]
        if moved:
            fail(f"install.py changed pinned packages: {'; '.join(moved)}")
        off = [f"{n} {after.get(n)} (pinned {pinned[n]})" for n in sorted(pinned) if not same_release(after.get(n), pinned[n])]
        if off:
            fail(f"the venv is not at the webui's pins: {'; '.join(off)}")
        print(f"setup_webui_env: install.py left all {len(names)} pinned packages as they were")
    elif command == "torch":
        now = installed()
        cuda = sorted(n for n in now if n.startswith(("nvidia-", "triton")))
        if now.get("torch") != TORCH or cuda:
            fail(f"{rest[0]}: torch is {now.get('torch')}, not {TORCH}"
                 + (f" and CUDA packages appeared: {', '.join(cuda)}" if cuda else ""))
    elif command == "extras":
        base = json.loads(Path(rest[0]).read_text(encoding="utf-8"))["packages"]
        print("\n".join(sorted(set(installed()) - set(base))))
    else:
        fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
