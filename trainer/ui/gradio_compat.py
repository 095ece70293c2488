"""What differs between Gradio 3.41 (AUTOMATIC1111, Forge Classic) and Gradio 4.x (Forge Neo's 4.40, or the standalone
app on plain Gradio 4), in one place. The rest of trainer/ui uses only idioms both have: `gr.update(...)` (never
`gr.Textbox.update`), `gr.Group` (never `gr.Box`), no `.style()`, constructor kwargs both signatures know.

Neo shims some of Gradio 3's spellings (forge-api.md F2: `_js=` renamed to `js=`, `Component.update`, `gr.Box`),
but plain Gradio 4 has none of them, so nothing here relies on a shim: the spelling is chosen by the installed major
version."""

from __future__ import annotations

import gradio as gr

MAJOR = int(str(gr.__version__).split(".")[0])
GRADIO_4 = MAJOR >= 4


def js_kwargs(js: str | None) -> dict:
    """The keyword for a client-side function on an event: `_js=` in Gradio 3, `js=` in Gradio 4."""
    if not js:
        return {}
    return {"js": js} if GRADIO_4 else {"_js": js}


def listen(event, fn, inputs, outputs, *, queue: bool = True, progress: bool = True, js: str | None = None):
    """Wire `fn` to `event` (a bound listener such as `button.click`) the same way under Gradio 3 and 4.

    - `api_name=False`: the tab's handlers are no API. It also keeps them out of Gradio 4's API description, which
      Gradio 4.40 builds for every page request and which fails (HTTP 500, no page) for file-carrying components
      (Image, Gallery) under pydantic >= 2.11 (`argument of type 'bool' is not iterable`).
    - `queue=False` for quick handlers that must answer while a queued one runs (Stop, the poll, Plot): both versions
      then answer them over plain HTTP, outside the queue and its concurrency limits.
    - `progress=False`: no loading overlay on the outputs (the poll runs every second; an overlay would flicker).
    """
    kwargs = {"api_name": False, "show_progress": "full" if progress else "hidden", **js_kwargs(js)}
    if not queue:
        kwargs["queue"] = False
    return event(fn, inputs, outputs, **kwargs)


def sends_props(component, names=("value", "elem_id")) -> bool:
    """Does the page get these constructor arguments of `component`? Gradio 4 sends only the attributes its class's
    `__init__` signature names, so a webui component subclass written for Gradio 3 (`__init__(self, *args,
    **kwargs)`, as AUTOMATIC1111's ToolButton is) reaches the page without its id and its text. Neo's keeps the
    signature (`functools.wraps(gr.Button.__init__)`). Gradio 3 builds the config from each class's own
    `get_config`, so there it is always true."""
    if not GRADIO_4:
        return True
    import inspect

    try:
        parameters = inspect.signature(type(component).__init__).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in names)


def unrender(component) -> None:
    """Take a just-made component out of the layout being built (Gradio 4; Gradio 3 never needs it here)."""
    if hasattr(component, "unrender"):
        component.unrender()
