"""Driver for subprocess tests: start the fake Forge Neo, load the extension (this repository), report as JSON.

Environment: the FAKE_FORGE_* variables of webui.py / modules (FAKE_FORGE_ROOT, FAKE_FORGE_CKPT_DIR,
FAKE_FORGE_LORA_DIR, FAKE_FORGE_LIST_SEED, …); FAKE_FORGE_BLOCK=pkg1,pkg2 makes those imports fail;
FAKE_FORGE_LOAD=<checkpoint name> selects it and loads it (`checkpoint_change` + `forge_model_reload`, as a first
generation would) before the UI is built; FAKE_FORGE_SERVE=<port> then serves the page on 127.0.0.1 (blocking).
"""

import json
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
HERE = os.path.dirname(os.path.abspath(__file__))
EXTENSION = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

for name in filter(None, os.environ.get("FAKE_FORGE_BLOCK", "").split(",")):
    sys.modules[name] = None  # `import name` now raises ImportError, as if it were not installed

import webui  # noqa: E402

if os.environ.get("FAKE_FORGE_LOAD"):
    from modules import sd_models
    from modules_forge import main_entry

    main_entry.checkpoint_change(os.environ["FAKE_FORGE_LOAD"])
    sd_models.forge_model_reload()
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
    "blocked_loaded": [n for n in os.environ.get("FAKE_FORGE_BLOCK", "").split(",") if n and sys.modules.get(n)],
}
print("REPORT " + json.dumps(report), flush=True)

if os.environ.get("FAKE_FORGE_SERVE"):  # serve the page as Forge does: queue on, extension JS/CSS in <head>
    standalone = sys.modules.get("traintrain_trainer.ui.standalone") or __import__(
        "importlib").import_module("traintrain_trainer.ui.standalone")
    standalone.inject_into_pages(standalone.head_html())
    webui.queue(demo)
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ["FAKE_FORGE_SERVE"]), prevent_thread_lock=False)
