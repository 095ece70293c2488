"""Snapshots of a venv's installed versions and the checks tools/setup_neo_env.sh makes (standard library only).

    python pins.py snapshot OUT.json                   every installed distribution → version
    python pins.py check BEFORE.json AFTER.json REQS   fail if any package of BEFORE moved or went, or the venv is
                                                       not at Neo's pins (REQS = requirements.txt, plus NEO below)
    python pins.py base WHEN                           fail unless torch/torchvision are Neo's 2.10.0 / 0.25.0 and
                                                       nothing Neo does not install (ABSENT) is there
    python pins.py extras BEFORE.json                  names installed now that BEFORE.json does not list

Failures print one line starting with "setup_neo_env:" and exit with code 1.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import sys
from pathlib import Path

# What Neo's launcher installs besides requirements.txt (its TORCH_COMMAND and GRADIO_PACKAGE, packaging).
NEO = {"torch": "2.10.0", "torchvision": "0.25.0", "gradio": "4.40.0", "gradio-rangeslider": "0.0.8",
       "packaging": "26.0"}
# Packages Neo never installs by default (open-clip, bitsandbytes only with --bnb, xformers only with --xformers,
# no LyCORIS, no optimizers): absent before install.py, so install.py's choices for them are what is tested.
ABSENT = ("open-clip-torch", "bitsandbytes", "xformers", "lycoris-lora", "prodigyopt", "dadaptation",
          "schedulefree", "pytorch-optimizer", "lion-pytorch")
PYTHON = "3.13"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def pins(path: str | Path) -> dict[str, str]:
    """name → version from `name==version` lines (comments, markers and other lines ignored)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def same_release(installed_version: str | None, pinned: str) -> bool:
    """`==pinned` as pip reads it: a local label (+cu128) on the installed version is ignored unless pinned."""
    if installed_version is None:
        return False
    return installed_version == pinned or ("+" not in pinned and installed_version.split("+")[0] == pinned)


def fail(message: str) -> None:
    print(f"setup_neo_env: {message}")
    sys.exit(1)


def main(argv: list[str]) -> None:
    command, rest = argv[0], argv[1:]
    if command == "snapshot":
        data = {"python": platform.python_version(), "packages": dict(sorted(installed().items()))}
        Path(rest[0]).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    elif command == "check":
        before, after = (json.loads(Path(p).read_text(encoding="utf-8"))["packages"] for p in rest[:2])
        pinned = {**pins(rest[2]), **NEO}
        moved = [f"{n} {before[n]} -> {after.get(n, '(removed)')}" for n in sorted(before) if before[n] != after.get(n)]
        if moved:
            pinned_moved = [m for m in moved if m.split()[0] in pinned]
            fail(f"install.py changed packages of Neo's venv: {'; '.join(moved)}"
                 + (f" (Neo pins {len(pinned_moved)} of them)" if pinned_moved else ""))
        off = [f"{n} {after.get(n)} (pinned {pinned[n]})" for n in sorted(pinned) if not same_release(after.get(n), pinned[n])]
        if off:
            fail(f"the venv is not at Neo's pins: {'; '.join(off)}")
        print(f"setup_neo_env: install.py left all {len(before)} packages of Neo's venv as they were "
              f"({len(pinned)} of them pinned by Neo), and added {len(set(after) - set(before))}")
    elif command == "base":
        now = installed()
        wrong = [f"{n} is {now.get(n)}, not {NEO[n]}" for n in ("torch", "torchvision") if not same_release(now.get(n), NEO[n])]
        present = [f"{n} {now[n]}" for n in ABSENT if n in now]
        if wrong or present:
            fail(f"{rest[0]}: " + "; ".join(wrong + ([f"Neo does not install {', '.join(present)}"] if present else [])))
        if not platform.python_version().startswith(PYTHON + "."):
            fail(f"{rest[0]}: Python is {platform.python_version()}, not Neo's {PYTHON}")
    elif command == "extras":
        base = json.loads(Path(rest[0]).read_text(encoding="utf-8"))["packages"]
        print("\n".join(sorted(set(installed()) - set(base))))
    else:
        fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
