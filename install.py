"""Run by the webui (in its own venv) before it starts: install only what is missing.

A package below is installed only when it cannot be imported at all; nothing already installed is upgraded,
downgraded or reinstalled, and torch is never installed. Each version was checked against the Python
environment of a webui v1.10.1 install (torch 2.1.2 there, transformers 4.30.2, tokenizers 0.13.3,
huggingface_hub 0.36.2, safetensors 0.4.2, numpy 1.26.2, Pillow 9.5.0, accelerate 0.21.0, gradio 3.41.2,
pydantic 1.10): its own requirements accept all of them, so pip has nothing to change.
tools/setup_webui_env.sh replays that: it builds a copy of that venv, runs this file the way the webui does and
fails if any pinned version moved.

Forge runs this file the same way (`"<python>" install.py`, PYTHONPATH=<webui root>, `launch.run_pip`). Forge Neo
(2026-02: Python 3.13, torch 2.10, gradio 4.40.0 + gradio_rangeslider 0.0.8, transformers 4.56.2, diffusers 0.36.0,
peft 0.17.1, numpy 2.3.5, Pillow 12.1.0, pydantic 2.10.6, safetensors 0.7.0) already ships diffusers, pandas and
matplotlib, so only open_clip_torch (--no-deps), lycoris-lora (which adds toml), bitsandbytes and the optimizers
are added; every version below also installs there on Python 3.13 without moving anything of Neo's. What Forge
ships is in GUARDED, so it is never touched: not even to "repair" the conflict Neo lives with (gradio 4.40.0 wants
pillow<11 next to Neo's Pillow 12.1.0). tools/setup_neo_env.sh replays that with a copy of Neo's venv and fails if
install.py moved any package in it.

As a second guard every pip call gets a constraints file holding the installed version of each package in
GUARDED, so pip cannot move one even in a venv that differs from v1.10.1's (another webui release, an older
huggingface_hub); a package that would need that is left out and a line says so (exit code 1, which the webui
only reports). `python install.py --dry-run` (with the webui's `launch` importable) asks pip to resolve every
requirement, present or not, under the same constraints, and installs nothing; a requirement whose package the
webui itself ships (a GUARDED one that is installed, such as Neo's diffusers) is not asked for, since this file
never installs it there.

A messy venv (one that already fails `pip check`) is handled too. Where an installed GUARDED package already
rejects the installed version of another package (torch 2.1.2 wants triton==2.1.0, another triton is installed), that
package is pinned as well, so pip cannot "repair" the old conflict by moving it; and because such a conflict makes
pip refuse every requirement that reaches torch (`ERROR: Cannot install torch==2.1.2 because these package
versions have conflicting dependencies.`), a requirement pip refused is retried on its own: its metadata is read
(pip's --dry-run --report, which installs nothing) and, when every requirement in it is met by an installed
distribution, it is installed with --no-deps; a missing dependency that is not a GUARDED package is added first
the same way. Nothing installed is moved, and a package that needs something installed at another version is left
out with one line naming that requirement.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import tempfile

try:  # the webui's venv has packaging; pip's vendored copy will do, and without either the retry is skipped
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # pragma: no cover - depends on the venv
    try:
        from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        Requirement = None
        InvalidRequirement = ValueError

# The webui's (or Forge's) pinned or resolved packages (and what its own code needs): never changed by this file.
# The webui v1.10.1 ones, then what Forge Neo also pins or installs (diffusers, peft, gradio_rangeslider, ...).
GUARDED = (
    "torch", "torchvision", "xformers", "transformers", "tokenizers", "huggingface_hub", "safetensors", "numpy",
    "Pillow", "accelerate", "gradio", "gradio_client", "fastapi", "starlette", "pydantic", "httpx", "httpcore",
    "protobuf", "open-clip-torch", "omegaconf", "einops", "psutil", "setuptools", "pytorch_lightning", "kornia",
    "scikit-image", "spandrel", "timm",
    "diffusers", "peft", "gradio_rangeslider", "pydantic_core", "lightning", "triton", "packaging",
)


def torch_version() -> tuple[int, int] | None:
    try:
        match = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return (int(match.group(1)), int(match.group(2))) if match else None


def requirements(torch: tuple[int, int]) -> dict[str, str]:
    """import name → pip requirement. Requirements that allow a range of a guarded package say which."""
    return {
        # huggingface_hub>=0.34 (<2), safetensors>=0.3.1, numpy, Pillow: unversioned. Loading and training use
        # its models and single-file converters, which work with transformers 4.30.2; its pipelines need a
        # newer transformers, and the trainer does not use them. Forge Neo ships its own (0.36.0): left alone.
        "diffusers": "diffusers==0.35.2",
        # torch, einops, numpy, safetensors, tqdm, toml: unversioned (LoHa works with the webui's einops 0.4.1);
        # diffusers/transformers only for its "dev" extra, so Neo's diffusers 0.36.0 is no obstacle.
        "lycoris": "lycoris-lora==4.1.3",
        # 0.46+ require torch>=2.2 and 0.48+ torch>=2.3; 0.45.5 is the last that accepts the webui's torch 2.1.2.
        # 0.50.2: torch>=2.4,<3, numpy>=1.17, packaging>=20.9, so Neo's torch 2.10 and numpy 2.3.5 too (Neo's own
        # --bnb would install 0.49.1, and skips bitsandbytes once it is installed).
        "bitsandbytes": "bitsandbytes==0.50.2" if torch >= (2, 4) else "bitsandbytes==0.45.5",
        "prodigyopt": "prodigyopt==1.1.2",  # no requirements
        "dadaptation": "dadaptation==3.2",  # no requirements
        "schedulefree": "schedulefree==1.4.1",  # torch, typing-extensions: unversioned
        "pytorch_optimizer": "pytorch-optimizer==4.1.0",  # torch>=2.1, numpy>1.24.4
        "lion_pytorch": "lion-pytorch==0.2.5",  # torch>=1.6
        # gradio 3.41.2 (and Neo's gradio 4.40.0) already brings both; these matter only in a venv that lost them
        # (they have wheels for the Python 3.10 most webui installs use and for Neo's 3.13).
        "pandas": "pandas==2.3.3",  # numpy>=1.22.4
        "matplotlib": "matplotlib==3.10.7",  # numpy>=1.23, pillow>=8
    }


# Installed without dependencies: its torchvision/timm requirements could replace the webui's torch, and only its
# CLIP vocabulary file is used. The webui pins this same version, so it is normally present.
NO_DEPS = {"open_clip": "open_clip_torch==2.20.0"}


def missing(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is None
    except (ImportError, ValueError):
        return True


def shipped(req: str) -> bool:
    """Whether req's package is one the webui itself ships (GUARDED) and is installed: never installed from here."""
    name = re.split(r"[=<>!~\[ ;]", req, maxsplit=1)[0]
    if canonical(name) not in {canonical(n) for n in GUARDED}:
        return False
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, tuple[str, str, list[str]]]:
    """canonical name → (name, version, requirement lines) of each distribution on sys.path (the first one wins)."""
    found = {}
    for dist in importlib.metadata.distributions():
        try:
            name, version, requires = dist.metadata["Name"], dist.version, list(dist.requires or [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a broken .dist-info: pip skips it too
            name = None
        if name and version and canonical(name) not in found:
            found[canonical(name)] = (name, version, requires)
    return found


def _applies(req, extras: tuple[str, ...] = ("",)) -> bool:
    if req.marker is None:
        return True
    try:
        return any(req.marker.evaluate({"extra": extra}) for extra in extras)
    except (ValueError, TypeError, KeyError):  # an unknown marker variable: not applying, as for pip check
        return False


def _pin(version: str) -> bool:
    return bool(re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version or ""))


def guard_constraints(have: dict[str, tuple[str, str, list[str]]] | None = None) -> str:
    """`name==version` for every installed GUARDED package (pip's constraints-file syntax), then for every
    installed package whose version an installed GUARDED package already rejects (a `pip check` failure that pip
    would otherwise try to repair by moving that package)."""
    lines = []
    for name in GUARDED:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if _pin(version):
            lines.append(f"{name}=={version}")
    for name, version in conflict_pins(installed() if have is None else have):
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def conflict_pins(have: dict[str, tuple[str, str, list[str]]]) -> list[tuple[str, str]]:
    """(name, installed version) of each non-GUARDED package an installed GUARDED package wants at another version."""
    if Requirement is None:
        return []
    guarded = {canonical(n) for n in GUARDED}
    pins = {}
    for key in sorted(guarded & set(have)):
        for line in have[key][2]:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            other = have.get(canonical(req.name))
            if (other is None or canonical(req.name) in guarded or not _applies(req) or not _pin(other[1])
                    or req.specifier.contains(other[1], prereleases=True)):
                continue
            pins[canonical(req.name)] = (other[0], other[1])
    return list(pins.values())


def unmet(requires: list[str], have: dict[str, tuple[str, str, list[str]]],
          extras: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """For a package's Requires-Dist lines (with these of its extras): (requirements on packages not installed,
    requirements an installed package does not meet, each with what is installed). Extras of an installed
    dependency are followed."""
    missing_reqs, blocking = [], []
    todo, seen = [(line, ("", *extras)) for line in requires], set()
    while todo:
        line, extras = todo.pop(0)
        try:
            req = Requirement(line)
        except InvalidRequirement:
            blocking.append(f"{line} (unreadable)")
            continue
        if not _applies(req, extras) or (str(req), extras) in seen:
            continue
        seen.add((str(req), extras))
        other = have.get(canonical(req.name))
        if other is None:
            missing_reqs.append(str(req).split(";")[0].strip())
        elif req.url or not req.specifier.contains(other[1], prereleases=True):
            blocking.append(f"{str(req).split(';')[0].strip()} ({other[0]} {other[1]} is installed)")
        elif req.extras:  # what the extra adds must be met too
            todo += [(dep, tuple(sorted(req.extras))) for dep in other[2] if not _applies_base(dep)]
    return missing_reqs, blocking


def _applies_base(line: str) -> bool:
    try:
        return _applies(Requirement(line))
    except InvalidRequirement:
        return False


def pip_error(err: RuntimeError) -> str:
    """pip's first ERROR line in launch.run_pip's message (whose stderr part starts "stderr: ERROR: ...")."""
    for line in str(err).splitlines():
        if "ERROR:" in line:
            return line[line.index("ERROR:"):].strip()
    return ""


class Installer:
    """Every pip call of one run: the webui's launch.run_pip, the constraints file, --dry-run or not."""

    def __init__(self, launch, constraints: str, dry_run: bool):
        self.launch, self.constraints, self.dry_run = launch, constraints, dry_run

    def pip(self, req: str, flags: str = "", desc: str = "") -> str | None:
        args = f'install {"--dry-run " if self.dry_run else ""}{flags}-c "{self.constraints}" "{req}"'
        out = self.launch.run_pip(args, f"TrainTrain requirement: {req}{desc}")
        if self.dry_run and out:
            print("".join(ln for ln in out.splitlines(True) if ln.startswith("Would install")), end="")
        return out

    def metadata(self, req: str) -> tuple[str, list[str]] | None:
        """(name==version, Requires-Dist) of what pip would install for req, read without resolving anything."""
        fd, report = tempfile.mkstemp(prefix="traintrain-report-", suffix=".json")
        os.close(fd)
        try:
            self.launch.run_pip(f'install --dry-run --no-deps --ignore-installed --quiet --report "{report}" '
                                f'-c "{self.constraints}" "{req}"',
                                f"TrainTrain requirement: {req} (reading its requirements)")
            with open(report, encoding="utf-8") as f:
                items = json.load(f).get("install") or []
            meta = next((i["metadata"] for i in items if i.get("requested")), None) or items[0]["metadata"]
            return f'{meta["name"]}=={meta["version"]}', list(meta.get("requires_dist") or [])
        except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # an old pip (no --report), no network, no such version: pip's own error is the reason
        finally:
            os.unlink(report)

    def add(self, req: str, flags: str = "", depth: int = 0) -> str | None:
        """Install req; None when done, else why not (pip's first ERROR line, or "" when it gave none)."""
        try:
            self.pip(req, flags)
            return None
        except RuntimeError as err:
            refused = pip_error(err)
        if flags or Requirement is None or depth > 4 or re.search(r"requirement \S+ \(from versions", refused):
            return refused  # a --no-deps install, or pip found no such version at all (no network, say)
        meta = self.metadata(req)
        if meta is None:
            return refused
        pinned, requires = meta
        missing_reqs, blocking = unmet(requires, installed(), tuple(sorted(Requirement(req).extras)))
        if blocking:
            return f"it needs {', '.join(blocking)}"
        guarded = {canonical(n) for n in GUARDED}
        for dep in missing_reqs:
            if canonical(Requirement(dep).name) in guarded:
                return f"it needs {dep}, which is not installed (the webui installs its own packages)"
            why = self.add(dep, depth=depth + 1)
            if why is not None:
                return f"it needs {dep}, which could not be added{': ' + why if why else ''}"
        try:
            self.pip(pinned, "--no-deps ", " (its requirements are installed)")
        except RuntimeError as err:
            return pip_error(err) or refused
        print(f"TrainTrain: {'would install' if self.dry_run else 'installed'} {req} with --no-deps: every "
              f"requirement it has is installed, but pip would not resolve this venv"
              f"{': ' + refused if refused else ''}")
        return None


def main(argv: list[str]) -> int:
    import launch  # the webui's module (PYTHONPATH is the webui root); present only when the webui runs this

    dry_run = "--dry-run" in argv
    torch = torch_version()
    if torch is None:
        print("TrainTrain: torch is not installed in this venv; installing nothing (the webui installs torch)")
        return 1
    wanted = [(name, req, "") for name, req in requirements(torch).items()
              if missing(name) or (dry_run and not shipped(req))]
    wanted += [(name, req, "--no-deps ") for name, req in NO_DEPS.items()
               if missing(name) or (dry_run and not shipped(req))]
    if not wanted:
        return 0

    failed = []
    fd, constraints = tempfile.mkstemp(prefix="traintrain-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(guard_constraints())
        installer = Installer(launch, constraints, dry_run)
        for name, req, flags in wanted:
            why = installer.add(req, flags)
            if why is not None:
                failed.append(name)
                print(f"TrainTrain: could not install {req} without changing the webui's packages"
                      f"{': ' + why if why else ''}")
    finally:
        os.unlink(constraints)
    if failed:
        print(f"TrainTrain: not installed: {', '.join(failed)} (the features that need them will say so)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
