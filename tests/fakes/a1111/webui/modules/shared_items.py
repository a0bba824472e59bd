"""Fake of ``modules/shared_items.py`` (A1111 v1.10.1, 82a973c0; the same in Forge dfdcbab6,
reForge and Forge Classic): what the checkpoint dropdown lists and what its refresh button calls."""


def list_checkpoint_tiles(use_short=False):
    from modules import sd_models

    return sd_models.checkpoint_tiles(use_short)


def refresh_checkpoints():
    from modules import sd_models

    return sd_models.list_models()
