"""Which webui the tab runs in, told from what is importable (forge-api.md F9), never from version strings.

| webui | what tells it |
|---|---|
| Forge Neo | `modules.sd_models.forge_model_reload` and a top-level `backend` package |
| Forge Classic | a top-level `ldm_patched` package (and `modules_forge`); `sd_models.load_model` as in A1111 |
| AUTOMATIC1111 | `sd_models.load_model` and `sd_models.model_data`, and no `modules_forge` |

`modules.lowvram` tells nothing: Classic deleted it too. Packages are looked up (`find_spec`), not imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

A1111, FORGE_NEO, FORGE_CLASSIC, UNKNOWN = "AUTOMATIC1111", "Forge Neo", "Forge Classic", "unknown"


@dataclass
class Webui:
    kind: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def problem(self) -> str:
        return (f"TrainTrain does not recognise this webui (found {', '.join(self.found) or 'nothing it knows'}; "
                f"not found: {', '.join(self.missing)}). It runs in AUTOMATIC1111 1.7–1.10, Forge Neo and Forge "
                "Classic, and standalone (python -m trainer ui).")


def _package(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect() -> Webui:
    from modules import sd_models

    names = {
        "sd_models.forge_model_reload": hasattr(sd_models, "forge_model_reload"),
        "backend": _package("backend"),
        "ldm_patched": _package("ldm_patched"),
        "modules_forge": _package("modules_forge"),
        "sd_models.load_model": hasattr(sd_models, "load_model"),
        "sd_models.model_data": hasattr(sd_models, "model_data"),
    }
    found = [n for n, present in names.items() if present]
    missing = [n for n, present in names.items() if not present]
    if names["sd_models.forge_model_reload"] and names["backend"]:
        kind = FORGE_NEO
    elif names["ldm_patched"] and names["sd_models.load_model"] and names["sd_models.model_data"]:
        kind = FORGE_CLASSIC
    elif names["sd_models.load_model"] and names["sd_models.model_data"] and not names["modules_forge"]:
        kind = A1111
    else:
        kind = UNKNOWN
    return Webui(kind, found, missing)


def host_for(webui: Webui):
    """The host class of a detected webui (RuntimeError with what was missing for an unknown one)."""
    if webui.kind == FORGE_NEO:
        from .forge import ForgeNeoHost

        return ForgeNeoHost()
    if webui.kind == FORGE_CLASSIC:
        from .forge_classic import ForgeClassicHost

        return ForgeClassicHost()
    if webui.kind == A1111:
        from .webui import WebuiHost

        return WebuiHost()
    raise RuntimeError(webui.problem())
