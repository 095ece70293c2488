"""Load extensions as Neo does and build their tabs into one page (modules/ui.py:create_ui, reduced).

Importing this module is Neo's start-up (before any model: the model loads at the first generation): the vendored
packages go on sys.path (modules_forge/initialization.py), gradio 4's shims are applied (modules/gradio_extensions.py),
and the built-in extensions (`extensions-builtin/`, here only Lora) load, unless FAKE_FORGE_BUILTIN=0. Each
`scripts/*.py` is exec'd under its file name with the extension root put first on sys.path, and the root **stays**
there afterwards (forge-api.md F1). A script that raises is reported and skipped.

`create_ui()` is the page: `forge_main_entry()` (the checkpoint is selected: `forge_loading_parameters` set, nothing
loaded), the txt2img tab, then each (blocks, title, elem_id) of the `on_ui_tabs` callbacks as a TabItem, ordered by
`opts.ui_tab_order`, `opts.hidden_tabs` left out; then the ui-config.json rules."""

import importlib.util
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN_EXTENSIONS = os.path.join(HERE, "extensions-builtin")
builtin_loaded = False
loadsave = None  # test-only: the UiLoadsave of the last create_ui()

import modules_forge.initialization  # noqa: E402,F401 — vendored packages on sys.path

from modules import gradio_extensions  # noqa: E402

gradio_extensions.apply()


def _load_scripts(extension_dir):
    from modules import scripts

    scripts_dir = os.path.join(extension_dir, "scripts")
    if extension_dir not in sys.path:
        sys.path.insert(0, extension_dir)
    for filename in sorted(os.listdir(scripts_dir)) if os.path.isdir(scripts_dir) else []:
        if not filename.endswith(".py"):
            continue
        path = os.path.join(scripts_dir, filename)
        scripts.current_basedir = extension_dir
        try:
            spec = importlib.util.spec_from_file_location(filename, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception:  # noqa: BLE001 — errors.report(f"Error loading script: {filename}")
            print(f"*** Error loading script: {path}", file=sys.stderr)
            traceback.print_exc()
        finally:
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
    """Every scripts/*.py of the extension, its root first on sys.path (and left there); the built-in extensions
    are loaded before the first one."""
    load_builtin_extensions()
    _load_scripts(extension_dir)


def txt2img_tab():
    """The txt2img tab's settings widgets, by the labels Neo saves them under (`txt2img/<label>/value`)."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as txt2img_interface:
        gr.Textbox(label="Prompt", interactive=True, elem_id="txt2img_prompt", lines=3)
        gr.Textbox(label="Negative prompt", interactive=True, elem_id="txt2img_neg_prompt", lines=3)
        gr.Dropdown(label="Sampling method", choices=["Euler a", "Euler", "DPM++ 2M", "DDIM"], value="Euler a",
                    interactive=True, elem_id="txt2img_sampling")
        gr.Dropdown(label="Schedule type", choices=["Automatic", "Karras", "Exponential", "Simple"],
                    value="Automatic", interactive=True, elem_id="txt2img_scheduler")
        gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps", interactive=True,
                  elem_id="txt2img_steps")
        gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Width", interactive=True,
                  elem_id="txt2img_width")
        gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Height", interactive=True,
                  elem_id="txt2img_height")
        gr.Slider(minimum=1.0, maximum=30.0, step=0.5, value=7.0, label="CFG Scale", interactive=True,
                  elem_id="txt2img_cfg_scale")
        gr.Number(label="Seed", value=-1, interactive=True, elem_id="txt2img_seed")
    return txt2img_interface


def create_ui():
    """The page, and the (blocks, title, elem_id) list the on_ui_tabs callbacks returned."""
    global loadsave
    import gradio as gr
    from modules import script_callbacks, shared, ui_loadsave
    from modules_forge import main_entry

    script_callbacks.before_ui_callback()
    main_entry.forge_main_entry()
    loadsave = ui_loadsave.UiLoadsave(shared.cmd_opts.ui_config_file)
    builtin = [(txt2img_tab(), "txt2img", "txt2img")]
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


def queue(demo):
    """demo.queue as Neo (gradio 4: default_concurrency_limit=32) or, under gradio 3, as Classic (64)."""
    from modules.gradio_extensions import GRADIO_4

    return demo.queue(default_concurrency_limit=32) if GRADIO_4 else demo.queue(64)


if os.environ.get("FAKE_FORGE_BUILTIN", "1") != "0":
    load_builtin_extensions()
