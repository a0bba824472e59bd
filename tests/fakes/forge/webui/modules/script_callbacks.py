"""Fake of ``modules/script_callbacks.py`` (Forge dfdcbab6): the model-loaded callbacks."""

callbacks: dict[str, list] = {"model_loaded": []}


def on_model_loaded(callback, *, name=None):
    callbacks["model_loaded"].append(callback)


def model_loaded_callback(sd_model):
    for fn in callbacks["model_loaded"]:
        fn(sd_model)
