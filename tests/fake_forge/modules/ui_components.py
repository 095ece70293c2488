"""Neo modules/ui_components.py: `ToolButton`, `FormRow`, `FormColumn`, `FormGroup`, `InputAccordion` (gradio 4 in
Neo; written to work with gradio 3 as well)."""

import inspect

import gradio as gr

GRADIO_4 = int(gr.__version__.split(".")[0]) >= 4


if GRADIO_4:  # gradio 4 writes a .pyi beside the file of every component class; Neo's patch skips classes that
    import gradio.component_meta as _component_meta  # set webui_do_not_create_gradio_pyi_thank_you (the fake: only
    _create_or_modify_pyi = _component_meta.create_or_modify_pyi  # while this file's classes are defined)

    def _no_pyi(component_class, class_name, events):
        if not getattr(component_class, "webui_do_not_create_gradio_pyi_thank_you", False):
            _create_or_modify_pyi(component_class, class_name, events)

    _component_meta.create_or_modify_pyi = _no_pyi


class FormComponent:
    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    """Small button with single emoji as text, fits inside gradio forms"""

    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        kwargs.pop("tooltip", None)  # Neo's gradio_extensions accepts tooltip=; the fake drops it
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class FormRow(FormComponent, gr.Row):
    """Same as gr.Row but fits inside gradio forms"""

    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class InputAccordion(gr.Checkbox):
    """A gr.Accordion that is also a (hidden) checkbox input: its value is whether the accordion is open.
    `with InputAccordion(False, label=…) as acc:` puts components inside; `acc.extra()` a column in its header."""

    global_index = 0
    webui_do_not_create_gradio_pyi_thank_you = True  # (gradio 4 would write a .pyi beside this file)

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        kwargs_checkbox = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **kwargs_checkbox)
        js = 'function(checked){ inputAccordionChecked("' + self.accordion_id + '", checked); }'
        self.change(fn=None, inputs=[self], **({"js": js} if GRADIO_4 else {"_js": js}))
        kwargs_accordion = {"label": kwargs.get("label", "Accordion"), "elem_id": self.accordion_id,
                            "elem_classes": ["input-accordion"], "open": value}
        if "visible" in kwargs:
            kwargs_accordion["visible"] = kwargs["visible"]
        self.accordion = gr.Accordion(**kwargs_accordion)

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"


if GRADIO_4:
    _component_meta.create_or_modify_pyi = _create_or_modify_pyi


def _keep_signature(cls, base):
    """gradio 4 builds a component's config from the parameters of its class's __init__: a subclass taking
    (*args, **kwargs) would lose elem_id, value, … — give it the base class's signature."""
    cls.__init__.__signature__ = inspect.signature(base.__init__)


_keep_signature(ToolButton, gr.Button)
_keep_signature(InputAccordion, gr.Checkbox)
