"""Block configs: which checkpoint keys each block (IN04, OUT11, BASE, ...) covers.

Derived from the sd-mecha converter registered between a block config and a model config,
so any custom block config registered with sd-mecha works too.
"""

from __future__ import annotations

import functools

from sd_mecha.extensions import merge_methods, model_configs

DEFAULT_BLOCKS = {
    "sd1-ldm": "sd1-supermerger_blocks",
    "sdxl-sgm": "sdxl-supermerger_blocks",
}


def default_block_config(model_config: str) -> str | None:
    return DEFAULT_BLOCKS.get(model_config)


def _block_converter(block_config: str, model_config: str):
    for conv in merge_methods.get_all_converters():
        params = conv.get_params()
        inputs = [p.model_config for p in params.args]
        ret = conv.get_return_type().data.model_config
        if len(inputs) == 1 and inputs[0] is not None and ret is not None \
                and inputs[0].identifier == block_config and ret.identifier == model_config:
            return conv
    raise ValueError(
        f"no sd-mecha converter from block config {block_config!r} to model config {model_config!r}"
    )


@functools.lru_cache(maxsize=16)
def key_to_block(block_config: str, model_config: str) -> dict[str, str]:
    """Every key of ``model_config`` mapped to the block that sets it."""
    conv = _block_converter(block_config, model_config)
    bc, mc = model_configs.resolve(block_config), model_configs.resolve(model_config)
    key_map = conv.build_key_map([bc], {}, mc)
    out = {}
    for key in mc.keys():  # noqa: SIM118 - a ModelConfig is not iterable
        relation = key_map.get(key)
        if relation is None or not relation.clauses:
            continue
        blocks = next(iter(relation.clauses[0].by_param.values()))
        out[key] = blocks[0]
    return out


def block_names(block_config: str) -> list[str]:
    return list(model_configs.resolve(block_config).keys())


@functools.lru_cache(maxsize=16)
def component_blocks(block_config: str, model_config: str, component: str) -> dict[str, tuple[str, ...]]:
    """Blocks that touch ``component``, each restricted to that component's keys, in block order."""
    comp_keys = component_keys(model_config, component)
    k2b = key_to_block(block_config, model_config)
    out: dict[str, list[str]] = {b: [] for b in block_names(block_config)}
    for key in comp_keys:
        block = k2b.get(key)
        if block is not None:
            out[block].append(key)
    return {b: tuple(keys) for b, keys in out.items() if keys}


@functools.lru_cache(maxsize=32)
def component_keys(model_config: str, component: str) -> tuple[str, ...]:
    comps = model_configs.resolve(model_config).components()
    if component not in comps:
        raise KeyError(component)
    return tuple(comps[component].keys())


def components(model_config: str) -> list[str]:
    return list(model_configs.resolve(model_config).components())
