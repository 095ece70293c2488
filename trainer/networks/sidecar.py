"""The user-metadata sidecar `<lora>.json` beside a LoRA (the webuis' "Edit metadata" file). Forge Neo ignores
`ss_base_model_version`: its Lora tab files a LoRA under SD1 or SDXL — and, with its preset filter on, hides it
under the other — by the sidecar's `"sd version"` alone ("sd" / "xl"; forge-api.md F6)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..fileio import write_json_atomic

log = logging.getLogger(__name__)


def write_sd_version(path: Path) -> None:
    """Set `"sd version"` ("sd" / "xl", from the file's ss_base_model_version) in the user-metadata sidecar
    `<lora>.json`, keeping whatever else the user wrote there."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        version = (f.metadata() or {}).get("ss_base_model_version", "")
    value = "xl" if "xl" in version else "sd" if version.startswith("sd_v1") else None
    if value is None:
        return
    sidecar = path.with_suffix(".json")
    data = {}
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s is not JSON; its \"sd version\" is left as it is", sidecar)
            return
        if not isinstance(data, dict):
            return
    if data.get("sd version") != value:
        data["sd version"] = value
        write_json_atomic(sidecar, data)
