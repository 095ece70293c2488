"""Webui entry point: registers the TrainTrain tab. Kept thin; everything else lives in the `trainer` package.

The package is loaded under a name of its own (`traintrain_trainer`), because the webui puts every extension's root on
sys.path while its scripts load and a bare `trainer` may already belong to another extension (upstream TrainTrain has
one). If anything fails to import, the tab still appears and says what is missing.
"""

import importlib
import importlib.util
import logging
import sys
import traceback
from pathlib import Path

from modules import script_callbacks

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "traintrain_trainer"
log = logging.getLogger("traintrain")


def load_package():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "trainer" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "trainer")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
    return sys.modules[PACKAGE]


def error_tab(error: str):
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown("## TrainTrain could not start")
        message = gr.Textbox(value=error, label="Message", lines=4, interactive=False, elem_id="tt_message")
        message.do_not_save_to_config = True  # the webui would show this start's error again at the next start
        gr.Markdown("Restart the webui so that the extension's install.py can add what is missing "
                    "(or install it into the webui's venv by hand), then reload the UI.")
    return blocks


def on_ui_tabs():
    try:
        load_package()
        extension = importlib.import_module(f"{PACKAGE}.host.extension")
        blocks = extension.build()
    except Exception as err:  # the webui would drop the tab silently; show why instead
        log.error("TrainTrain: %s", traceback.format_exc())
        blocks = error_tab(f"{type(err).__name__}: {err}")
    return [(blocks, "TrainTrain", "traintrain")]


script_callbacks.on_ui_tabs(on_ui_tabs)
