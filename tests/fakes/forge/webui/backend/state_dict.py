"""Fake of ``backend/state_dict.py`` (Forge dfdcbab6, ``:25-40``): ``try_filter_state_dict`` **pops**
the keys with one of the prefixes from ``sd`` and returns them with the prefix removed."""


def try_filter_state_dict(sd, prefix_list, new_prefix=""):
    for prefix in prefix_list:
        if any(k.startswith(prefix) for k in sd):
            return {new_prefix + k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}
    return {}
