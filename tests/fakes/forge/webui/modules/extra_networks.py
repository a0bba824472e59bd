"""Fake of ``modules/extra_networks.py`` (Forge dfdcbab6), Lora only: ``parse_prompts`` strips
``<lora:name[:multiplier]>`` tags (always); ``activate`` hands exactly the tagged networks (none:
an empty list) to the built-in ``sd_forge_lora`` extension."""

import re

_TAG = re.compile(r"<(\w+):([^>]+)>")


def parse_prompts(prompts):
    res, data = [], {"lora": []}
    for i, prompt in enumerate(prompts):
        found = []

        def take(m, found=found):
            if m.group(1) == "lora":
                parts = m.group(2).split(":")
                found.append((parts[0], float(parts[1]) if len(parts) > 1 else 1.0))
            return ""

        res.append(_TAG.sub(take, prompt))
        if i == 0:
            data["lora"] = found
    return res, data


def activate(p, extra_network_data):
    import networks  # extensions-builtin/sd_forge_lora/networks.py, a top-level module

    found = (extra_network_data or {}).get("lora", [])
    networks.load_networks([n for n, _ in found], [m for _, m in found], [m for _, m in found])
