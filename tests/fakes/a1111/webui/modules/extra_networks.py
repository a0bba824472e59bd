"""Fake of ``modules/extra_networks.py`` (A1111 v1.10.1, 82a973c0), Lora only.

``parse_prompts`` strips ``<lora:name[:multiplier]>`` tags (always, even with extra networks
disabled); ``activate`` loads exactly the tagged networks (an empty set unloads them all).
"""

import re

_TAG = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    found = []

    def take(m):
        if m.group(1) == "lora":
            parts = m.group(2).split(":")
            found.append((parts[0], float(parts[1]) if len(parts) > 1 else 1.0))
        return ""

    return _TAG.sub(take, prompt), found


def parse_prompts(prompts):
    res, data = [], {"lora": []}
    for i, prompt in enumerate(prompts):
        stripped, found = parse_prompt(prompt)
        if i == 0:
            data["lora"] = found
        res.append(stripped)
    return res, data


def activate(p, extra_network_data):
    import networks  # the built-in Lora extension, a top-level module

    found = (extra_network_data or {}).get("lora", [])
    networks.load_networks([n for n, _ in found], [m for _, m in found])
