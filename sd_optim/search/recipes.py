"""Merge mode: trial values -> an sd-mecha recipe graph.

The recipe references the input checkpoints by absolute path, so its ``.mecha`` text is
reproducible anywhere sd-mecha runs; the merge engine swaps in cached tensors at merge time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sd_mecha
from sd_mecha import recipe_nodes
from sd_mecha.extensions import merge_methods
from sd_mecha.extensions.merge_spaces import MergeSpace

from ..config import RunConfig
from .methods import method_signature, resolve_method
from .space import PerKey, SearchSpace


class RecipeError(ValueError):
    pass


def model_node(path: str | Path, model_config: str | None = None) -> recipe_nodes.RecipeNode:
    return sd_mecha.model(str(Path(path).resolve()), config=model_config)


def _add_difference(a, b, alpha=1.0):
    # The sd_mecha.add_difference Python wrapper crashes on model nodes in 1.1.8 (docs/sd-mecha.md).
    return merge_methods.resolve("add_difference")(a, b, alpha=alpha)


def _subtract(a, b):
    return merge_methods.resolve("subtract")(a, b)


def _repair_sd1_kohya_converter() -> None:
    """sd-mecha 1.1.8's ``convert_'sd1-kohya'_to_'sd1-ldm'`` indexes its key relation like a
    mapping (``relation["kohya_sd"]``), a TypeError on every key, so no SD1 LoRA converts to
    ``sd1-ldm``. Replace its ``__call__`` with the intended one, only while it is broken."""
    from sd_mecha.extensions.builtin.model_configs.convert_sd1_kohya_to_original import (
        reshape_weight_for_sd,
    )
    from sd_mecha.keys_map import RealizedKeyRelation

    try:
        cls = merge_methods.resolve("convert_'sd1-kohya'_to_'sd1-ldm'").__wrapped__
    except (KeyError, AttributeError):
        return
    probe = RealizedKeyRelation(("k",), {"kohya_sd": ("k",)}, False)
    try:
        cls()({"k": 0.0}, key_relation=probe)
        return  # works as shipped
    except TypeError as e:
        if "not subscriptable" not in str(e):
            return

    def __call__(self, kohya_sd, **kwargs):
        relation = kwargs["key_relation"]
        res = kohya_sd[relation.inputs["kohya_sd"][0]]
        return reshape_weight_for_sd(res) if relation.meta else res

    cls.__call__ = __call__


def input_nodes(config: RunConfig, model_config: str) -> tuple[list, Any]:
    """(the merge inputs with their LoRAs applied, the base model node or None)."""
    loras: dict[str, list] = {}
    if config.loras and model_config == "sd1-ldm":
        _repair_sd1_kohya_converter()
    for lora in config.loras:
        delta = sd_mecha.convert(model_node(config.resolve_path(lora.path)), model_config)
        loras.setdefault(lora.apply_to, []).append((delta, lora.strength))
    nodes = []
    base = None
    for m in config.models:
        node = model_node(config.resolve_path(m.path), model_config)
        for delta, strength in loras.get(m.name, []):
            # a LoRA has no value for most keys: without the fallback sd-mecha drops them all
            node = _add_difference(node, delta, alpha=strength) | node
        if m.name == config.base_model:
            base = node
        else:
            nodes.append(node)
    return nodes, base


def trusted_literal(values: dict[str, Any], model_config, merge_space=None) -> recipe_nodes.LiteralRecipeNode:
    """sd-mecha's literal node for values this program made (numbers, strings, booleans, nodes)
    without sd-mecha's per-value type check, which costs about 2 ms per trial for a key-wise
    literal over SD1's ~900 keys (tests/test_merge_modes.py holds it equal to the checked node)."""
    node = recipe_nodes.LiteralRecipeNode({}, model_config=model_config, merge_space=merge_space)
    node.value_dict = values
    return node


def hyper_node(value: Any, model_config: str, hyper: str):
    """A scalar stays a scalar; per-key values become a key literal with a fallback default."""
    if not isinstance(value, PerKey):
        return value
    literal = trusted_literal(dict(value.values), model_config)
    if value.default is None:
        raise RecipeError(f"hyperparameter {hyper!r} has no default for the keys no strategy covers; "
                          f"set merge.fixed.{hyper} or cover every key")
    return literal | value.default


def build_merge_recipe(config: RunConfig, space: SearchSpace, params: dict[str, Any]):
    method = resolve_method(config.merge.method)
    model_params, _hypers = method_signature(method)
    inputs, base = input_nodes(config, space.model_config)
    args = _bind_models(config.merge.method, model_params, inputs, base)
    ret = method.get_return_type().data.merge_space
    if base is not None and not _is_delta(ret) and not any(mp.merge_spaces == ("delta",)
                                                           for mp in model_params):
        raise RecipeError(f"{config.merge.method} takes no difference from a base model, so "
                          f"base_model {config.base_model!r} would be left out of the merge; "
                          "remove base_model to merge it as an ordinary input")
    kwargs = {}
    for hyper, value in space.hyper_values(params).items():
        if value is not None:
            kwargs[hyper] = hyper_node(value, space.model_config, hyper)
    for hyper, value in config.merge.fixed.items():
        if hyper not in space.hypers and value is not None:
            kwargs[hyper] = value
    recipe = method(*args, **kwargs)
    if _is_delta(ret):
        if base is None:
            raise RecipeError(f"{config.merge.method} returns a delta: set base_model to add it to")
        recipe = _add_difference(base, recipe)
    return recipe


def _is_delta(spaces) -> bool:
    # a return type holds one MergeSpace (``Return(T, "delta")``) or a generic MergeSpaceSymbol
    if isinstance(spaces, MergeSpace):
        spaces = {spaces}
    if isinstance(spaces, (set, frozenset, tuple, list)):
        ids = {getattr(s, "identifier", s) for s in spaces}
        return ids == {"delta"}
    return False


def _bind_models(method_name: str, model_params, inputs: list, base) -> list:
    def as_input(mp, node):
        if mp.merge_spaces == ("delta",):
            if base is None:
                raise RecipeError(f"{method_name} takes {mp.name!r} as a difference from a base model: "
                                  "set base_model to one of the models")
            return _subtract(node, base)
        return node

    if any(mp.variadic for mp in model_params):
        fixed = [mp for mp in model_params if not mp.variadic]
        variadic = next(mp for mp in model_params if mp.variadic)
        if len(inputs) < len(fixed) + 1:
            raise RecipeError(f"{method_name} needs at least {len(fixed) + 1} models, got {len(inputs)}")
        head = [as_input(mp, n) for mp, n in zip(fixed, inputs)]
        return head + [as_input(variadic, n) for n in inputs[len(fixed):]]
    if len(inputs) != len(model_params):
        names = ", ".join(mp.name for mp in model_params)
        raise RecipeError(f"{method_name} takes {len(model_params)} models ({names}), got "
                          f"{len(inputs)} (base_model excluded)")
    return [as_input(mp, n) for mp, n in zip(model_params, inputs)]


def recipe_text(recipe) -> str:
    return sd_mecha.serialize(recipe, finalize=False)


def load_recipe_text(text: str):
    return sd_mecha.deserialize(text.rstrip("\n").split("\n"))
