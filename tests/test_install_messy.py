"""install.py in a messy venv (one that already fails `pip check`), offline.

A throwaway venv gets a dummy torch 2.1.2 that requires dummydep==1.0 while dummydep 2.0 is installed — the kind of
conflict a webui venv often has (torch pinning a triton or typing-extensions another package moved). Every extra
that depends on torch then makes pip either refuse (dummydep 1.0 unobtainable, or dummydep pinned) or "repair" the
old conflict by downgrading dummydep. install.py runs there exactly as the webui runs it (`<venv python>
install.py`, `import launch` finding tools/webui_env/launch.py, pip through launch.run_pip), with its requirement
list swapped for dummy extras and pip pointed at a folder of wheels written here (`--no-index`, via PIP_* variables).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_LAUNCH = ROOT / "tools" / "webui_env"

# import name → requirement, as install.requirements() returns; each dummy's Requires-Dist is in WHEELS.
EXTRAS = {
    "ttopt": "ttopt==1.1.2",  # no requirements (prodigyopt, dadaptation)
    "ttsched": "ttsched==1.4.1",  # torch, unversioned (schedulefree); its other lines do not apply here
    "ttlion": "ttlion==0.2.5",  # torch>=1.6 and a package that is not installed yet, which itself needs torch
    "ttnew": "ttnew==0.48.0",  # torch>=2.3: would need another torch
    "ttold": "ttold==1.0",  # dummydep==1.0: would need the installed dummydep downgraded
    "ttvision": "ttvision==0.1",  # torchvision, whose installed version already rejects the installed torch
    "ttgone": "ttgone==1.0",  # on no index at all (pip's error says so; its metadata is not asked for)
}
WHEELS = {  # (name, version): Requires-Dist
    ("ttopt", "1.1.2"): [],
    ("ttsched", "1.4.1"): ["torch", "ttnever ; python_version < '3'", "ttnever2 ; extra == 'dev'"],
    ("ttlion", "0.2.5"): ["torch>=1.6", "tthelper>=0.3"],
    ("tthelper", "0.4"): ["torch"],
    ("ttnew", "0.48.0"): ["torch>=2.3"],
    ("ttold", "1.0"): ["dummydep==1.0"],
    ("ttvision", "0.1"): ["torchvision>=0.15"],
}
# `pip check` fails twice: torch wants another dummydep, and torchvision (also GUARDED) another torch.
PREINSTALLED = {("torch", "2.1.2"): ["dummydep==1.0"], ("dummydep", "2.0"): [],
                ("torchvision", "0.16.2"): ["torch==2.1.0"]}

DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("traintrain_install", sys.argv[1])
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)
install.requirements = lambda torch: json.loads(sys.argv[2])
install.NO_DEPS = {}
sys.exit(install.main(sys.argv[3:]))
"""


def write_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A pure-Python wheel holding package `name` (a zip with .dist-info/METADATA, WHEEL, RECORD)."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                      + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


class MessyVenv:
    def __init__(self, root: Path):
        self.root = root
        self.python = root / "venv" / "bin" / "python"
        self.wheels = root / "wheels"  # what the "index" offers: the extras, tthelper, no dummydep 1.0
        self.repairable = root / "wheels-repairable"  # the same plus dummydep 1.0, so pip could downgrade it
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
        self.env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                        PIP_NO_CACHE_DIR="1", PYTHONNOUSERSITE="1", PIP_FIND_LINKS=str(self.wheels))

    def build(self) -> None:
        pre = self.root / "preinstalled"
        for folder in (pre, self.wheels, self.repairable):
            folder.mkdir()
        for (name, version), requires in WHEELS.items():
            write_wheel(self.wheels, name, version, requires)
            write_wheel(self.repairable, name, version, requires)
        write_wheel(self.repairable, "dummydep", "1.0", [])
        pre_wheels = [str(write_wheel(pre, n, v, r)) for (n, v), r in PREINSTALLED.items()]
        subprocess.run([sys.executable, "-m", "venv", str(self.root / "venv")], check=True, env=self.env)
        self.pip("install", "--no-deps", *pre_wheels, check=True)

    def pip(self, *args: str, check: bool = False, find_links: Path | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, PIP_FIND_LINKS=str(find_links or self.wheels))
        return subprocess.run([str(self.python), "-m", "pip", *args], env=env, capture_output=True, text=True,
                              check=check)

    def install_py(self, *argv: str, find_links: Path | None = None) -> subprocess.CompletedProcess:
        """`<venv python> install.py` as the webui runs it, with EXTRAS as its requirements."""
        env = dict(self.env, PYTHONPATH=str(FAKE_LAUNCH), PIP_FIND_LINKS=str(find_links or self.wheels))
        return subprocess.run([str(self.python), "-c", DRIVER, str(ROOT / "install.py"), json.dumps(EXTRAS), *argv],
                              env=env, capture_output=True, text=True, cwd=FAKE_LAUNCH, timeout=120, check=False)

    def versions(self) -> dict[str, str]:
        """name → version of every distribution in the venv (its .dist-info folders, as pip list reads them)."""
        found = {}
        for info in (self.root / "venv").glob("lib/python*/site-packages/*.dist-info"):
            name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
            found[name.lower().replace("_", "-")] = version
        return found


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    venv = MessyVenv(tmp_path_factory.mktemp("messy"))
    venv.build()
    return venv


def _install_module():
    spec = importlib.util.spec_from_file_location("traintrain_install_messy", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_venv_is_messy_and_pip_alone_cannot_add_a_torch_extra(messy):
    """What install.py used to do (every pip call constrained by the guarded pins only, here torch==2.1.2)."""
    assert "torch 2.1.2 has requirement dummydep==1.0, but you have dummydep 2.0" in messy.pip("check").stdout
    old = messy.root / "old-constraints.txt"
    old.write_text("torch==2.1.2\n")
    refused = messy.pip("install", "--dry-run", "-c", str(old), "ttsched==1.4.1")
    assert refused.returncode == 1
    assert "ERROR: Could not find a version that satisfies the requirement dummydep==1.0 (from torch)" in refused.stderr
    repaired = messy.pip("install", "--dry-run", "-c", str(old), "ttsched==1.4.1", find_links=messy.repairable)
    assert repaired.returncode == 0 and "Would install dummydep-1.0 ttsched-1.4.1" in repaired.stdout  # a downgrade
    plain = messy.pip("install", "--dry-run", "-c", str(old), "ttopt==1.1.2")
    assert plain.returncode == 0  # an extra that does not reach torch never saw the conflict
    old.write_text("torch==2.1.2\ntorchvision==0.16.2\n")
    vision = messy.pip("install", "--dry-run", "-c", str(old), "ttvision==0.1")
    assert vision.returncode == 1 and "ERROR: ResolutionImpossible" in vision.stderr
    assert "torchvision 0.16.2 depends on torch==2.1.0" in vision.stdout
    assert messy.pip("check").returncode == 1
    with pytest.raises(subprocess.CalledProcessError):  # the test venv runs install.py's pip-vendored packaging
        subprocess.run([str(messy.python), "-c", "import packaging"], check=True, capture_output=True)


def test_dry_run_resolves_what_it_can_and_installs_nothing(messy):
    before = messy.versions()
    run = messy.install_py("--dry-run", find_links=messy.repairable)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert messy.versions() == before
    for wheel in ("ttopt-1.1.2", "ttsched-1.4.1", "tthelper-0.4", "ttlion-0.2.5", "ttvision-0.1"):
        assert f"Would install {wheel}" in out, out
    assert "dummydep-1.0" not in out  # not even planned
    assert "TrainTrain: not installed: ttnew, ttold, ttgone (the features that need them will say so)" in out


def test_installs_every_extra_whose_requirements_are_met_and_moves_nothing(messy):
    before = messy.versions()
    run = messy.install_py(find_links=messy.repairable)  # dummydep 1.0 on offer: pip must not downgrade to it
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    after = messy.versions()
    assert after["torch"] == "2.1.2" and after["dummydep"] == "2.0"
    assert {k: v for k, v in after.items() if k in before} == before  # nothing installed moved
    added = {k: v for k, v in after.items() if k not in before}
    assert added == {"ttopt": "1.1.2", "ttsched": "1.4.1", "ttlion": "0.2.5", "tthelper": "0.4", "ttvision": "0.1"}
    lines = out.splitlines()
    refusals = [ln for ln in lines if ln.startswith("TrainTrain: could not install")]
    prefix = "TrainTrain: could not install {} without changing the webui's packages: "
    assert refusals == [
        prefix.format("ttnew==0.48.0") + "it needs torch>=2.3 (torch 2.1.2 is installed)",
        prefix.format("ttold==1.0") + "it needs dummydep==1.0 (dummydep 2.0 is installed)",
        prefix.format("ttgone==1.0")
        + "ERROR: Could not find a version that satisfies the requirement ttgone==1.0 (from versions: none)",
    ], out
    assert "ttgone==1.0 (reading its requirements)" not in out
    assert lines[-1] == "TrainTrain: not installed: ttnew, ttold, ttgone (the features that need them will say so)"
    notes = [ln for ln in lines if "with --no-deps: every requirement it has is installed" in ln]
    assert [n.split()[2] for n in notes] == ["ttsched==1.4.1", "tthelper>=0.3", "ttlion==0.2.5", "ttvision==0.1"]
    # dummydep 1.0 was on offer, so it is the pin on dummydep 2.0 that made pip refuse (and not downgrade it)
    assert notes[0].endswith("but pip would not resolve this venv: ERROR: Cannot install torch==2.1.2 because these "
                             "package versions have conflicting dependencies."), notes[0]

    again = messy.install_py(find_links=messy.repairable)  # only what is still missing is tried again
    assert again.returncode == 1 and "ttopt" not in again.stdout and "ttsched" not in again.stdout
    assert messy.versions() == after


def test_the_requirement_checks():
    """The pure parts, with the real `packaging` of the interpreter running the tests."""
    install = _install_module()
    have = {"torch": ("torch", "2.1.2", ["dummydep==1.0", "triton==2.1.0 ; platform_system == 'Nowhere'"]),
            "dummydep": ("dummydep", "2.0", []),
            "huggingface-hub": ("huggingface_hub", "0.36.2", ["torch ; extra == 'torch'", "ttmissing ; extra == 'x'"]),
            "numpy": ("numpy", "1.26.2", [])}
    assert install.conflict_pins(have) == [("dummydep", "2.0")]
    assert install.unmet(["torch>=2.0", "numpy>1.24.4", "ttplain", "huggingface-hub[torch]>=0.34",
                          "ttwin ; sys_platform == 'nowhere'", "ttdev ; extra == 'dev'"], have) == (["ttplain"], [])
    assert install.unmet(["huggingface_hub[x]"], have) == (["ttmissing"], [])
    assert install.unmet(["ttdev ; extra == 'dev'"], have, ("dev",)) == (["ttdev"], [])
    assert install.unmet(["torch>=2.3", "numpy<1.25"], have) == (
        [], ["torch>=2.3 (torch 2.1.2 is installed)", "numpy<1.25 (numpy 1.26.2 is installed)"])
    assert "dummydep==2.0" in install.guard_constraints(have).splitlines()


def test_without_any_packaging_it_runs_as_before(monkeypatch, capsys):
    """No `packaging` and no pip to borrow it from: no extra pins, no retry, pip's refusal is the reason."""
    for name in ("packaging", "packaging.requirements", "pip", "pip._vendor", "pip._vendor.packaging",
                 "pip._vendor.packaging.requirements"):
        monkeypatch.setitem(sys.modules, name, None)
    install = _install_module()
    assert install.Requirement is None and install.conflict_pins({"torch": ("torch", "2.1.2", ["x==1"])}) == []
    calls = []

    def run_pip(args, desc):
        calls.append(args)
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: pip {args}\nError code: 1\n"
                           "stderr: ERROR: Cannot install ttsched==1.4.1 because these package versions have "
                           "conflicting dependencies.\nERROR: ResolutionImpossible: for help visit …")

    monkeypatch.setitem(sys.modules, "launch", type(sys)("launch"))
    monkeypatch.setattr(sys.modules["launch"], "run_pip", run_pip, raising=False)
    monkeypatch.setattr(install, "requirements", lambda torch: {"ttsched_not_here": "ttsched==1.4.1"})
    monkeypatch.setattr(install, "NO_DEPS", {})
    monkeypatch.setattr(install, "torch_version", lambda: (2, 1))
    assert install.main([]) == 1
    assert len(calls) == 1 and calls[0].startswith("install -c ")
    assert capsys.readouterr().out.splitlines() == [
        ("TrainTrain: could not install ttsched==1.4.1 without changing the webui's packages: ERROR: Cannot install "
         "ttsched==1.4.1 because these package versions have conflicting dependencies."),
        "TrainTrain: not installed: ttsched_not_here (the features that need them will say so)",
    ]


def test_dry_run_skips_what_the_webui_ships(monkeypatch):
    """Forge Neo ships diffusers (a GUARDED package): install.py never installs it there, so --dry-run does not ask
    pip to resolve our pin for it either; a package the webui does not ship is resolved, installed or not."""
    install = _install_module()
    assert install.shipped("diffusers==0.35.2") and install.shipped("torch")  # both in the test interpreter
    assert not install.shipped("ttopt==1.1.2")  # not GUARDED
    assert importlib.util.find_spec("xformers") is None and not install.shipped("xformers==0.0.28")  # not installed
    calls = []
    monkeypatch.setitem(sys.modules, "launch", type(sys)("launch"))
    monkeypatch.setattr(sys.modules["launch"], "run_pip", lambda args, desc: calls.append(args) or "",
                        raising=False)
    monkeypatch.setattr(install, "requirements", lambda torch: {"diffusers": "diffusers==0.35.2",
                                                                 "pytest": "pytest==1.0"})
    monkeypatch.setattr(install, "NO_DEPS", {})
    monkeypatch.setattr(install, "torch_version", lambda: (2, 1))
    assert install.main(["--dry-run"]) == 0
    assert len(calls) == 1 and calls[0].startswith("install --dry-run ") and calls[0].endswith('"pytest==1.0"')
