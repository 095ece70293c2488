"""`python -m trainer ui`: the tab as its own web app on 127.0.0.1, with style.css and javascript/ loaded explicitly
(the webui injects them itself)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..paths import JSON_DIR, LOGS_DIR, PRESETS_DIR, ROOT

log = logging.getLogger(__name__)

SCRIPTS = sorted((ROOT / "javascript").glob("*.js"))
STYLESHEET = ROOT / "style.css"


def folders_for(data_dir: Path | None):
    """json/, logs/ and presets/ under data_dir (seeded with the shipped presets), else the repository's own."""
    from .tab import Folders

    if data_dir is None:
        return Folders(PRESETS_DIR, JSON_DIR, LOGS_DIR)
    data_dir = Path(data_dir)
    presets = data_dir / "presets"
    if not presets.is_dir():
        presets.mkdir(parents=True)
        for preset in PRESETS_DIR.glob("*.json"):
            shutil.copy2(preset, presets / preset.name)
    return Folders(presets, data_dir / "json", data_dir / "logs")


def head_html() -> str:
    """The extension's scripts and stylesheet as inline tags for the page head."""
    parts = [f"<style>{STYLESHEET.read_text(encoding='utf-8')}</style>"] if STYLESHEET.exists() else []
    parts += [f"<script>{script.read_text(encoding='utf-8')}</script>" for script in SCRIPTS]
    return "\n".join(parts)


def inject_into_pages(extra_head: str) -> None:
    """Add `extra_head` before </head> of every page Gradio serves (what the webui does for extensions; works on
    Gradio 3 and 4, which have no common `head=` argument)."""
    import gradio.routes

    templates = gradio.routes.templates
    original = getattr(templates, "_traintrain_original", templates.TemplateResponse)

    def template_response(*args, **kwargs):
        response = original(*args, **kwargs)
        response.body = response.body.replace(b"</head>", extra_head.encode("utf-8") + b"</head>")
        response.init_headers()
        return response

    templates._traintrain_original = original
    templates.TemplateResponse = template_response


def build_app(models_dir: Path | None = None, output_dir: Path | None = None, data_dir: Path | None = None):
    """(blocks, service): the tab over a StandaloneHost, ready to launch."""
    from ..host.standalone import StandaloneHost
    from ..jobs.service import TrainingService
    from .tab import build_tab

    folders = folders_for(data_dir)
    host = StandaloneHost(lora_dir=Path(output_dir) if output_dir else ROOT / "output",
                          models_dir=Path(models_dir) if models_dir else None)
    service = TrainingService(host, queue_file=folders.json / "queue.json", logs_dir=folders.logs,
                              json_dir=folders.json)
    blocks = build_tab(service, host, folders)
    blocks.title = "TrainTrain"
    return blocks, service


def serve(models_dir=None, output_dir=None, data_dir=None, port: int = 7870, block: bool = True):
    blocks, service = build_app(models_dir, output_dir, data_dir)
    inject_into_pages(head_html())
    blocks.launch(server_name="127.0.0.1", server_port=port, inbrowser=False, share=False,
                  prevent_thread_lock=not block, show_api=False)
    return blocks, service
