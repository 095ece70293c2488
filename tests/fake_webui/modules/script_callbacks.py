"""webui modules/script_callbacks.py: registration by category; `on_x(callback, *, name=None)` (v1.9+)."""

from collections import namedtuple

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])
callback_map = {key: [] for key in ("callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs",
                                    "callbacks_ui_train_tabs", "callbacks_ui_settings", "callbacks_before_reload",
                                    "callbacks_script_unloaded", "callbacks_before_ui")}


def add_callback(callbacks, fun, *, name=None, category="unknown"):
    callbacks.append(ScriptCallback("fake", fun, name or f"fake/{category}"))


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_train_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_train_tabs"], callback, name=name, category="ui_train_tabs")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_reload(callback, *, name=None):
    add_callback(callback_map["callbacks_before_reload"], callback, name=name, category="before_reload")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def ui_tabs_callback():
    """As the webui: each callback returns a list of (blocks, title, elem_id) or None; exceptions are reported and
    that extension's tab is skipped."""
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception as err:  # noqa: BLE001 — the webui's report_exception
            print(f"Error executing callback ui_tabs_callback for {c.name}: {err!r}")
    return res


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        c.callback(demo, app)


def model_loaded_callback(sd_model):
    """After each load or weight reload, after the hijack; exceptions are reported, the others still run."""
    for c in callback_map["callbacks_model_loaded"]:
        try:
            c.callback(sd_model)
        except Exception as err:  # noqa: BLE001 — the webui's report_exception
            print(f"Error executing callback model_loaded_callback for {c.name}: {err!r}")


def script_unloaded_callback():
    for c in callback_map["callbacks_script_unloaded"]:
        try:
            c.callback()
        except Exception as err:  # noqa: BLE001
            print(f"Error executing callback script_unloaded_callback for {c.name}: {err!r}")
