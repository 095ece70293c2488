"""Load an extension as the webui 1.10 does and build its tabs into one page."""

import importlib.util
import os
import sys


def load_extension_scripts(extension_dir):
    """Every scripts/*.py exec'd under its bare file name, with the extension root first on sys.path meanwhile."""
    from modules import scripts

    scripts_dir = os.path.join(extension_dir, "scripts")
    for filename in sorted(os.listdir(scripts_dir)):
        if not filename.endswith(".py"):
            continue
        path = os.path.join(scripts_dir, filename)
        sys.path.insert(0, extension_dir)
        scripts.current_basedir = extension_dir
        try:
            spec = importlib.util.spec_from_file_location(filename, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(extension_dir)
            scripts.current_basedir = None


def create_ui():
    """modules/ui.py:create_ui, reduced to the extension tabs: each (blocks, title, elem_id) → a TabItem."""
    import gradio as gr

    from modules import script_callbacks

    interfaces = script_callbacks.ui_tabs_callback()
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo:
        with gr.Tabs(elem_id="tabs"):
            for interface, label, ifid in interfaces:
                with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                    interface.render()
    return demo, interfaces
