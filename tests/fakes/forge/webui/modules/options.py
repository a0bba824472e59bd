"""Fake of ``modules/options.py`` (Forge dfdcbab6): ``OptionInfo`` and ``Options``; reads fall back
to defaults, ``set`` writes the value before calling ``onchange``."""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, **kwargs):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh

    def info(self, text):
        return self

    def needs_reload_ui(self):
        return self


class Options:
    def __init__(self, data_labels: dict):
        super().__setattr__("data_labels", data_labels)
        super().__setattr__("data", {k: v.default for k, v in data_labels.items()})

    def __setattr__(self, key, value):
        if key in self.data_labels:
            self.data[key] = value
            return
        super().__setattr__(key, value)

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        labels = self.__dict__.get("data_labels", {})
        if item in labels:
            return labels[item].default
        raise AttributeError(f"'Options' object has no attribute '{item}'")

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def set(self, key, value, is_api=False, run_callbacks=True):
        if self.data.get(key) == value:
            return False
        setattr(self, key, value)
        option = self.data_labels[key]
        if run_callbacks and option.onchange is not None:
            option.onchange()
        return True

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)
