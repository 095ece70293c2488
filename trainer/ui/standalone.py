"""`python -m trainer ui`: the tab as its own web app on 127.0.0.1, with style.css and javascript/ loaded explicitly
(the webui injects them itself).

The app answers only its own page: Gradio's open CORS middleware (`access-control-allow-origin: *`) is removed, as
the webui removes it, and `LocalOnly` refuses (403) a request whose Host is not 127.0.0.1:<port> / localhost:<port>
(DNS rebinding), one whose Origin is another origin (a web page POSTing to the Stop handler, reading /config), and a
browser's cross-site request other than a plain navigation (Sec-Fetch-Site)."""

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


CORS_MIDDLEWARES = ("CORSMiddleware", "CustomCORSMiddleware")


class LocalOnly:
    """ASGI middleware: only requests from this app's own page (or a user typing its address) get through."""

    def __init__(self, app, port: int):
        self.app = app
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    def refusal(self, scope) -> str | None:
        headers = {}
        for key, value in scope.get("headers") or ():
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        host = headers.get("host", [])
        if len(host) != 1 or host[0].strip().lower() not in self.hosts:
            return "unexpected Host header"
        origin = headers.get("origin", [])
        if origin and (len(origin) != 1 or origin[0].strip().lower() not in self.origins):
            return "cross-origin request"
        site = (headers.get("sec-fetch-site") or [""])[0].strip().lower()
        navigation = scope["type"] == "http" and scope.get("method") == "GET" \
            and (headers.get("sec-fetch-mode") or [""])[0].strip().lower() == "navigate"
        if site in ("cross-site", "same-site") and not navigation:
            return "cross-site request"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        why = self.refusal(scope)
        if why is None:
            return await self.app(scope, receive, send)
        log.warning("refused a %s to %s: %s", scope["type"], scope.get("path", ""), why)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
            return
        body = f"Forbidden: {why}. TrainTrain answers only its own page.".encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def lock_down(app, port: int):
    """Remove Gradio's CORS middleware from a not yet started FastAPI app and put LocalOnly in front."""
    app.user_middleware = [m for m in app.user_middleware
                           if getattr(getattr(m, "cls", None), "__name__", "") not in CORS_MIDDLEWARES]
    app.add_middleware(LocalOnly, port=port)
    return app


def lock_down_apps(port: int) -> None:
    """Every app Gradio creates from now on (launch creates it just before the server starts, on Gradio 3 and 4)
    is locked down, so no request is ever served by an open one."""
    import gradio.routes

    App = gradio.routes.App
    original = App.__dict__.get("_traintrain_original_create_app") or App.__dict__["create_app"]
    create = original.__get__(None, App)  # a staticmethod (Gradio 3.41 and 4) or a classmethod, as a plain callable

    def create_app(*args, **kwargs):
        return lock_down(create(*args, **kwargs), port)

    App._traintrain_original_create_app = original
    App.create_app = staticmethod(create_app)


def build_app(models_dir: Path | None = None, output_dir: Path | None = None, data_dir: Path | None = None,
              devices=None):
    """(blocks, service): the tab over a StandaloneHost, ready to launch. `devices`: a queue worker on each."""
    from ..host.standalone import StandaloneHost
    from ..jobs.service import TrainingService
    from .tab import build_tab

    folders = folders_for(data_dir)
    host = StandaloneHost(lora_dir=Path(output_dir) if output_dir else ROOT / "output",
                          models_dir=Path(models_dir) if models_dir else None)
    service = TrainingService(host, queue_file=folders.json / "queue.json", logs_dir=folders.logs,
                              json_dir=folders.json, devices=devices)
    blocks = build_tab(service, host, folders)
    blocks.title = "TrainTrain"
    return blocks, service


def serve(models_dir=None, output_dir=None, data_dir=None, port: int = 7870, block: bool = True, devices=None):
    blocks, service = build_app(models_dir, output_dir, data_dir, devices)
    inject_into_pages(head_html())
    lock_down_apps(port)
    blocks.launch(server_name="127.0.0.1", server_port=port, inbrowser=False, share=False,
                  prevent_thread_lock=not block, show_api=False)
    return blocks, service
