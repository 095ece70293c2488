"""Driver for tests/test_webui_extension.py: start the fake webui, load the extension, report as JSON.

Environment: FAKE_WEBUI_BLOCK=pkg1,pkg2 makes those imports fail (a package the webui venv lacks);
FAKE_WEBUI_LOAD=<checkpoint name> loads it into the webui before the UI is built (as its start-up does);
FAKE_WEBUI_TRAIN=<settings JSON file> then runs that job through the tab's service and waits for it;
FAKE_WEBUI_SERVE=<port> then serves the page on 127.0.0.1 (blocking).
"""

import json
import os
import sys
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # as the webui's own start-up does: no phoning home
HERE = os.path.dirname(os.path.abspath(__file__))
EXTENSION = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

for name in filter(None, os.environ.get("FAKE_WEBUI_BLOCK", "").split(",")):
    sys.modules[name] = None  # `import name` now raises ImportError, as if it were not installed

import webui  # noqa: E402

if os.environ.get("FAKE_WEBUI_LOAD"):
    from modules import sd_models

    sd_models.load_model(sd_models.get_closet_checkpoint_match(os.environ["FAKE_WEBUI_LOAD"]))
webui.load_extension_scripts(EXTENSION)
demo, interfaces = webui.create_ui()
config = demo.get_config_file()
elem_ids = sorted({c["props"].get("elem_id") for c in config["components"] if c["props"].get("elem_id")})
messages = [c["props"].get("value") for c in config["components"] if c["props"].get("elem_id") == "tt_message"]
report = {
    "tabs": [[type(b).__name__, title, elem_id] for b, title, elem_id in interfaces],
    "elem_ids": elem_ids,
    "message": messages[0] if messages else None,
    "values": {c["props"]["elem_id"]: c["props"].get("value") for c in config["components"]
               if c["props"].get("elem_id") in ("tt_model", "tt_mode", "tt_vae", "tt_message")},
    "model_choices": next((c["props"].get("choices") for c in config["components"]
                           if c["props"].get("elem_id") == "tt_model"), None),
    "blocked_loaded": [n for n in os.environ.get("FAKE_WEBUI_BLOCK", "").split(",") if n and sys.modules.get(n)],
}

if os.environ.get("FAKE_WEBUI_TRAIN"):
    from modules import sd_models, shared

    extension = sys.modules["traintrain_trainer.host.extension"]
    settings = sys.modules["traintrain_trainer.settings"]
    with open(os.environ["FAKE_WEBUI_TRAIN"], encoding="utf-8") as f:
        data = json.load(f)
    data["model"] = sd_models.checkpoint_tiles()[0]
    service = extension.service()
    job, _ = settings.job_from_json(data)
    service.start(job)
    if os.environ.get("FAKE_WEBUI_INTERRUPT"):
        while service.status().step < 2 and service.status().state not in ("error", "finished"):
            time.sleep(0.05)
        shared.state.interrupt()  # the webui's Interrupt button
    service.wait(600)
    status = service.status()
    report["train"] = {"state": status.state, "message": status.message, "path": status.path,
                       "step": status.step, "jobs_begun": shared.state.begun,
                       "lock_free": not sys.modules["modules.call_queue"].queue_lock.locked()}

print("REPORT " + json.dumps(report), flush=True)

if os.environ.get("FAKE_WEBUI_SERVE"):  # serve the page as the webui does: queue on, extension JS/CSS in <head>
    standalone = sys.modules.get("traintrain_trainer.ui.standalone") or __import__(
        "importlib").import_module("traintrain_trainer.ui.standalone")
    standalone.inject_into_pages(standalone.head_html())
    import gradio

    # the webui's demo.queue(64) is Gradio 3's concurrency count; under Gradio 4 (the Neo environment) the same limit
    if gradio.__version__.startswith("4"):
        demo.queue(default_concurrency_limit=64)
    else:
        demo.queue(64)
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ["FAKE_WEBUI_SERVE"]), prevent_thread_lock=False)
