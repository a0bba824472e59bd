"""Fake of ``modules/script_callbacks.py`` (A1111 v1.10.1, 82a973c0): the callbacks the hosts use."""

callbacks: dict[str, list] = {name: [] for name in (
    "model_loaded", "ui_tabs", "ui_settings", "app_started", "script_unloaded", "before_reload")}


def clear_callbacks():
    for lst in callbacks.values():
        lst.clear()


def _add(kind, fn):
    callbacks[kind].append(fn)


def on_model_loaded(callback, *, name=None):
    _add("model_loaded", callback)


def on_ui_tabs(callback, *, name=None):
    _add("ui_tabs", callback)


def on_ui_settings(callback, *, name=None):
    _add("ui_settings", callback)


def on_app_started(callback, *, name=None):
    _add("app_started", callback)


def on_script_unloaded(callback, *, name=None):
    _add("script_unloaded", callback)


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
