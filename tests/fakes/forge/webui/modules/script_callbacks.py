"""Fake of ``modules/script_callbacks.py`` (Forge dfdcbab6, the same API as A1111 1.10): the
callbacks the host and the extension entry register, and the calls that fire them."""

callbacks: dict[str, list] = {name: [] for name in (
    "model_loaded", "ui_tabs", "ui_settings", "app_started", "script_unloaded")}


def clear_callbacks():
    for lst in callbacks.values():
        lst.clear()


def on_model_loaded(callback, *, name=None):
    callbacks["model_loaded"].append(callback)


def on_ui_tabs(callback, *, name=None):
    callbacks["ui_tabs"].append(callback)


def on_ui_settings(callback, *, name=None):
    callbacks["ui_settings"].append(callback)


def on_app_started(callback, *, name=None):
    callbacks["app_started"].append(callback)


def on_script_unloaded(callback, *, name=None):
    callbacks["script_unloaded"].append(callback)


def model_loaded_callback(sd_model):
    for fn in callbacks["model_loaded"]:
        fn(sd_model)


def app_started_callback(demo, app):
    for fn in callbacks["app_started"]:
        fn(demo, app)


def ui_tabs_callback():
    res = []
    for fn in callbacks["ui_tabs"]:
        res += fn() or []
    return res


def ui_settings_callback():
    for fn in callbacks["ui_settings"]:
        fn()


def script_unloaded_callback():
    for fn in callbacks["script_unloaded"]:
        fn()
