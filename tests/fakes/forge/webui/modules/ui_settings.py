"""Fake of ``modules/ui_settings.py`` (Forge dfdcbab6, ``:23-41``; the same in A1111 v1.10.1,
reForge and Forge Classic): how the Settings page builds a setting's component.

Reproduced: ``create_setting_component(key)`` takes ``info.component`` (called with
``info.component_args``), else picks one from the *type of the default*: ``str`` -> Textbox,
``int`` -> Number, ``bool`` -> Checkbox; any other type (a float default among them) raises
``Exception('bad options item type: ...')``, which aborts building the whole UI.
"""

from modules import shared


def create_setting_component(key, is_quicksettings=False):
    import gradio as gr

    info = shared.opts.data_labels[key]
    t = type(info.default)
    args = info.component_args() if callable(info.component_args) else info.component_args
    if info.component is not None:
        comp = info.component
    elif t is str:
        comp = gr.Textbox
    elif t is int:
        comp = gr.Number
    elif t is bool:
        comp = gr.Checkbox
    else:
        raise Exception(f"bad options item type: {t} for key {key}")  # noqa: TRY002 - as the WebUI does
    return comp(label=info.label, value=shared.opts.data.get(key, info.default), elem_id=f"setting_{key}",
                **(args or {}))
