"""Presets (`presets/<name>.json`) and saved run settings (`json/**/<name>.json`), in upstream's JSON format."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .fileio import write_json_atomic
from .paths import JSON_DIR, PRESETS_DIR


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of settings")
    return data


def _stem(name: str, what: str) -> str:
    name = str(name or "").strip()
    if name.lower().endswith(".json"):
        name = name[:-5]
    if not name:
        raise UserError(f"choose a {what} name first")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{what} name {name!r} must not contain a path")
    return name


def preset_names(presets_dir: Path = PRESETS_DIR) -> list[str]:
    return sorted((p.stem for p in Path(presets_dir).glob("*.json")), key=str.lower)


def load_preset(name: str, presets_dir: Path = PRESETS_DIR) -> dict:
    return read_json(Path(presets_dir) / f"{_stem(name, 'preset')}.json")


def save_preset(name: str, data: dict, overwrite: bool, presets_dir: Path = PRESETS_DIR) -> Path:
    """`presets/<name>.json`; an existing preset is replaced only when `overwrite` (the save_overwrite box) is on."""
    path = Path(presets_dir) / f"{_stem(name, 'preset (save_lora_name)')}.json"
    try:
        return write_json_atomic(path, data, overwrite=overwrite)
    except FileExistsError:  # checked at the rename: a preset saved meanwhile by someone else is never replaced
        raise UserError(f"preset {path.name} already exists; tick save_overwrite to replace it") from None


def find_json(name: str, json_dir: Path = JSON_DIR) -> Path:
    """`<name>.json` anywhere under json/ (the newest if several days hold one)."""
    stem = _stem(name, "JSON")
    found = sorted(Path(json_dir).rglob(f"{stem}.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no {stem}.json under {json_dir}")
    return found[-1]


def load_json(name: str, json_dir: Path = JSON_DIR) -> dict:
    return read_json(find_json(name, json_dir))
