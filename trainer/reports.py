"""The quality report of a finished run: `<name>.report.json` beside the LoRA, its headline numbers in the file's
metadata (`traintrain.quality`) and one printed line. The numbers themselves come from modes/quality.py."""

from __future__ import annotations

import json
from pathlib import Path

from .fileio import write_text_atomic

METADATA_KEY = "traintrain.quality"


def headline_metadata(report: dict) -> dict[str, str]:
    return {METADATA_KEY: json.dumps(report.get("headline", {}))}


def report_path(lora_path: Path) -> Path:
    return Path(lora_path).with_suffix(".report.json")


def write_report(report: dict, lora_path: Path) -> Path:
    return write_text_atomic(report_path(lora_path), json.dumps(report, indent=2))


def report_summary(report: dict) -> str:
    parts = [f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in report.get("headline", {}).items()]
    return "quality (held-out, noise-prediction space): " + ", ".join(parts)
