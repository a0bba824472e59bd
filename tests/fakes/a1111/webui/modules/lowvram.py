"""Fake of ``modules/lowvram.py`` (A1111 v1.10.1, 82a973c0)."""


def is_enabled(sd_model):
    return getattr(sd_model, "lowvram", False)


def send_everything_to_cpu():
    pass
