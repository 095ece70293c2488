"""Neo modules/gradio_extensions.py, reduced (forge-api.md F2): under gradio 4, `gr.Box = gr.Group` and
`Component.update = gr.update` (so `gr.Textbox.update(...)` works). Not faked: `_js=` → `js=` on listeners, dropping
unknown constructor kwargs with a warning, `source=` → `sources=`, `tooltip=`. Under gradio 3 nothing is changed."""

import gradio as gr

GRADIO_4 = int(gr.__version__.split(".")[0]) >= 4
patched = {}


def apply():
    if not GRADIO_4 or patched:
        return
    from gradio.components import Component

    patched["Box"] = getattr(gr, "Box", None)
    gr.Box = gr.Group
    patched["update"] = Component.__dict__.get("update")
    Component.update = staticmethod(gr.update)


def undo():
    if not patched:
        return
    from gradio.components import Component

    if patched["Box"] is None:
        del gr.Box
    else:
        gr.Box = patched["Box"]
    if patched["update"] is None:
        del Component.update
    else:
        Component.update = patched["update"]
    patched.clear()
