"""The extension's own folders (the repository root when standalone, the extension folder inside the webui)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = ROOT / "presets"
JSON_DIR = ROOT / "json"
LOGS_DIR = ROOT / "logs"
DEMO_DIR = ROOT / "demo"  # generated on first use: demo checkpoint and sample images (git-ignored)
