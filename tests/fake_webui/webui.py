"""Load extensions as the webui 1.10 does and build their tabs into one page (modules/ui.py:create_ui, reduced).

Built-in extensions (`extensions-builtin/`, here only Lora) load first, the same way as any other: each scripts/*.py
exec'd with the extension root on sys.path only meanwhile, so their modules stay in sys.modules under bare names
(`networks`, `network`, `lora_patches`). A script that raises is reported and skipped, as the webui does.

Importing this module is the webui's start-up: the built-in extensions load then (before any model is loaded, as
in the webui), unless FAKE_WEBUI_BUILTIN=0."""

import importlib.util
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN_EXTENSIONS = os.path.join(HERE, "extensions-builtin")
builtin_loaded = False
loadsave = None  # test-only: the UiLoadsave of the last create_ui()


def _load_scripts(extension_dir):
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
        except Exception:  # noqa: BLE001 — errors.report(f"Error loading script: {filename}")
            print(f"*** Error loading script: {path}", file=sys.stderr)
            traceback.print_exc()
        finally:
            sys.path.remove(extension_dir)
            scripts.current_basedir = None


def load_builtin_extensions():
    """The built-in Lora extension: `import networks` works afterwards (once per process)."""
    global builtin_loaded
    if builtin_loaded:
        return
    builtin_loaded = True
    for name in sorted(os.listdir(BUILTIN_EXTENSIONS)):
        _load_scripts(os.path.join(BUILTIN_EXTENSIONS, name))


def load_extension_scripts(extension_dir):
    """Every scripts/*.py exec'd under its bare file name, with the extension root first on sys.path meanwhile;
    the built-in extensions are loaded before the first one."""
    load_builtin_extensions()
    _load_scripts(extension_dir)


def txt2img_tab():
    """The txt2img tab's settings widgets, by the labels the webui saves them under (`txt2img/<label>/value`, A11,
    A12); no generation is wired to them here — extensions read their current values from the page. Interactive, as
    the webui's are (they are its Generate button's inputs)."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as txt2img_interface:
        gr.Textbox(label="Prompt", interactive=True, elem_id="txt2img_prompt", lines=3)
        gr.Textbox(label="Negative prompt", interactive=True, elem_id="txt2img_neg_prompt", lines=3)
        gr.Dropdown(label="Sampling method", choices=["DPM++ 2M", "Euler a", "Euler", "DDIM"], value="DPM++ 2M",
                    interactive=True, elem_id="txt2img_sampling")
        gr.Dropdown(label="Schedule type", choices=["Automatic", "Karras", "Exponential"], value="Automatic",
                    interactive=True, elem_id="txt2img_scheduler")
        gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps", interactive=True, elem_id="txt2img_steps")
        gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Width", interactive=True, elem_id="txt2img_width")
        gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Height", interactive=True, elem_id="txt2img_height")
        gr.Slider(minimum=1.0, maximum=30.0, step=0.5, value=7.0, label="CFG Scale", interactive=True, elem_id="txt2img_cfg_scale")
        gr.Number(label="Seed", value=-1, interactive=True, elem_id="txt2img_seed")
    return txt2img_interface


def create_ui():
    """Each (blocks, title, elem_id) of the on_ui_tabs callbacks → a TabItem, ordered by `opts.ui_tab_order`,
    `opts.hidden_tabs` left out; then the ui-config.json rules (modules/ui_loadsave.py, file
    `cmd_opts.ui_config_file`)."""
    global loadsave
    import gradio as gr
    from modules import script_callbacks, shared, ui_loadsave

    loadsave = ui_loadsave.UiLoadsave(shared.cmd_opts.ui_config_file)
    builtin = [(txt2img_tab(), "txt2img", "txt2img")]  # built before the extensions' tabs, as ui.create_ui does
    interfaces = script_callbacks.ui_tabs_callback()
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo, gr.Tabs(elem_id="tabs") as tabs:
        tab_order = {k: i for i, k in enumerate(shared.opts.ui_tab_order)}
        for interface, label, ifid in builtin + sorted(interfaces, key=lambda x: tab_order.get(x[1], 9999)):
            if label in shared.opts.hidden_tabs:
                continue
            with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                interface.render()
            if ifid not in ("extensions", "settings"):
                loadsave.add_block(interface, ifid)
        loadsave.add_component(f"webui/Tabs@{tabs.elem_id}", tabs)
    loadsave.dump_defaults()
    return demo, interfaces


if os.environ.get("FAKE_WEBUI_BUILTIN", "1") != "0":
    load_builtin_extensions()
