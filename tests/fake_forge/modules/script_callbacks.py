"""Neo modules/script_callbacks.py: registration by category, `on_x(callback, *, name=None)` (forge-api.md F2).
`on_ui_tabs` callbacks take no arguments and return None or a list of (gr.Blocks, title, elem_id).
`on_ui_train_tabs` exists but Neo never calls `ui_train_tabs_callback` (there is no Train tab)."""

from collections import namedtuple

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])
callback_map = {key: [] for key in ("callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs",
                                    "callbacks_ui_train_tabs", "callbacks_ui_settings", "callbacks_before_reload",
                                    "callbacks_script_unloaded", "callbacks_before_ui", "callbacks_list_optimizers",
                                    "callbacks_infotext_pasted")}


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


def on_list_optimizers(callback, *, name=None):
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name, category="list_optimizers")


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")


def _report(kind, c, err):
    print(f"Error executing callback {kind} for {c.name}: {err!r}")


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception as err:  # noqa: BLE001 — Neo's report_exception
            _report("ui_tabs_callback", c, err)
    return res


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception as err:  # noqa: BLE001
            _report("app_started_callback", c, err)


def model_loaded_callback(sd_model):
    for c in callback_map["callbacks_model_loaded"]:
        try:
            c.callback(sd_model)
        except Exception as err:  # noqa: BLE001
            _report("model_loaded_callback", c, err)


def before_ui_callback():
    for c in callback_map["callbacks_before_ui"]:
        try:
            c.callback()
        except Exception as err:  # noqa: BLE001
            _report("before_ui_callback", c, err)


def script_unloaded_callback():
    for c in callback_map["callbacks_script_unloaded"]:
        try:
            c.callback()
        except Exception as err:  # noqa: BLE001
            _report("script_unloaded_callback", c, err)
