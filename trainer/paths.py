"""The extension's own folders (the repository root when standalone, the extension folder inside the webui).

`TRAINTRAIN_DATA_DIR`, when set, moves what a run writes — json/ (saved settings, the queue, uploaded images) and
logs/ — under that folder, for every entry point (CLI, standalone app, the webui's tab). The tests set it, so that
runs in parallel never share a queue file; presets stay beside the code.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ["TRAINTRAIN_DATA_DIR"]) if os.environ.get("TRAINTRAIN_DATA_DIR") else ROOT
PRESETS_DIR = ROOT / "presets"
JSON_DIR = DATA_ROOT / "json"
LOGS_DIR = DATA_ROOT / "logs"
DEMO_DIR = ROOT / "demo"  # generated on first use: demo checkpoint and sample images (git-ignored)
