"""Neo modules/ui_loadsave.py (as A1111's): `UiLoadsave(filename)` — every labelled component of a tab registered under
"<tab elem_id>/<label>/<field>"; a value saved in ui-config.json replaces the component's value before the page is
built (Dropdown/Radio only when it is among the choices); `do_not_save_to_config = True` opts a component out.
`dump_defaults()` writes the file (new keys get the current values; saved ones are kept)."""

import json
import os

import gradio as gr

from modules.ui_components import ToolButton


def _choice_values(component):
    """Gradio 3 choices are values; gradio 4 choices are (label, value) pairs."""
    return [c[-1] if isinstance(c, (tuple, list)) else c for c in (getattr(component, "choices", None) or [])]


class UiLoadsave:
    def __init__(self, filename):
        self.filename = filename
        self.ui_settings = {}
        self.component_mapping = {}
        self.error_loading = False
        self.ui_settings = self.read_from_file()

    def read_from_file(self):
        if not os.path.exists(self.filename):
            return {}
        try:
            with open(self.filename, encoding="utf8") as file:
                return json.load(file)
        except Exception as e:  # noqa: BLE001 — the webui reports it and starts with defaults
            self.error_loading = True
            print(f"Error loading settings from {self.filename}: {e!r}")
            return {}

    def add_component(self, path, x):
        def apply_field(obj, field, condition=None):
            key = f"{path}/{field}"
            if getattr(obj, "do_not_save_to_config", False):
                return
            saved_value = self.ui_settings.get(key, None)
            if saved_value is None:
                self.ui_settings[key] = getattr(obj, field)
            elif condition and not condition(saved_value):
                pass
            else:
                if isinstance(obj, gr.Textbox) and field == "value":
                    saved_value = str(saved_value)
                elif isinstance(obj, gr.Number) and field == "value":
                    try:
                        saved_value = float(saved_value)
                    except ValueError:
                        return
                setattr(obj, field, saved_value)
            if field == "value" and key not in self.component_mapping:
                self.component_mapping[key] = obj

        if type(x) in (gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown, ToolButton,
                       gr.Button) and x.visible:
            apply_field(x, "visible")
        if type(x) is gr.Slider:
            for field in ("value", "minimum", "maximum", "step"):
                apply_field(x, field)
        if type(x) is gr.Radio:
            apply_field(x, "value", lambda val: val in _choice_values(x))
        if type(x) in (gr.Checkbox, gr.Textbox, gr.Number):
            apply_field(x, "value")
        if type(x) is gr.Dropdown:
            def check_dropdown(val):
                choices = _choice_values(x)
                if getattr(x, "multiselect", False):
                    return all(value in choices for value in val)
                return val in choices

            apply_field(x, "value", check_dropdown)
        if type(x) is gr.Tabs and x.elem_id is not None:
            def check_tab_id(tab_id):
                tab_items = [c for c in x.children if isinstance(c, gr.TabItem)]
                if isinstance(tab_id, str):
                    return tab_id in [t.id for t in tab_items]
                return isinstance(tab_id, int) and 0 <= tab_id < len(tab_items)

            apply_field(x, "selected", check_tab_id)

    def add_block(self, x, path=""):
        """All components inside the block x (buttons without a label by their text)."""
        if hasattr(x, "children"):
            if isinstance(x, gr.Tabs) and x.elem_id is not None:
                self.add_component(f"{path}/Tabs@{x.elem_id}", x)
            for c in x.children:
                self.add_block(c, path)
        elif getattr(x, "label", None) is not None:
            self.add_component(f"{path}/{x.label}", x)
        elif isinstance(x, gr.Button) and x.value is not None:
            self.add_component(f"{path}/{x.value}", x)

    def write_to_file(self, current_ui_settings):
        with open(self.filename, "w", encoding="utf8") as file:
            json.dump(current_ui_settings, file, indent=4, ensure_ascii=False)

    def dump_defaults(self):
        """Saves the values to the file unless it exists and could not be read at start."""
        if self.error_loading and os.path.exists(self.filename):
            return
        self.write_to_file(self.ui_settings)
