"""What a merge method takes: its model inputs and its tunable hyperparameters.

Read from the sd-mecha registry and each method's signature, so methods registered by users
work like the built-in ones.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from sd_mecha.extensions import merge_methods

from ..errors import ConfigError, Problem
from . import adjust  # registers layer_adjust with sd-mecha (and gives its span)


@dataclass(frozen=True)
class Hyper:
    """A numeric hyperparameter in the ``param`` merge space."""

    name: str
    kind: str  # "float" or "int"
    default: Any  # None when the method has no default
    span: tuple[float, float] = (0.0, 1.0)  # the range tuned when guide.bounds gives none


@dataclass(frozen=True)
class ModelParam:
    name: str
    merge_spaces: tuple[str, ...]  # () when generic (any merge space)
    variadic: bool


def resolve_method(name: str):
    try:
        return merge_methods.resolve(name)
    except KeyError:
        names = [m.identifier for m in merge_methods.get_all() if not _is_converter(m)]
        near = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError([Problem("merge.method", f"unknown sd-mecha merge method{hint}", name)]) from None


def _is_converter(m) -> bool:
    return m.identifier.startswith("convert_") or m in merge_methods.get_all_converters()


def list_methods() -> list[str]:
    return sorted(m.identifier for m in merge_methods.get_all() if not _is_converter(m))


def _spaces(ms) -> tuple[str, ...]:
    if isinstance(ms, (set, frozenset, tuple, list)):
        return tuple(sorted(getattr(s, "identifier", str(s)) for s in ms))
    return ()  # a merge-space symbol: generic


def _interface_kind(interface) -> str | None:
    if interface is bool:
        return None
    if interface is torch.Tensor or interface is float:
        return "float"
    if interface is int:
        return "int"
    return None


def method_signature(method) -> tuple[list[ModelParam], dict[str, Hyper]]:
    """(model inputs in call order, numeric hyperparameters by name)."""
    sig = method.get_signature()
    names = method.get_param_names()
    spaces = method.get_input_merge_spaces()
    models: list[ModelParam] = []
    hypers: dict[str, Hyper] = {}
    for pname, p in sig.parameters.items():
        if p.kind == p.VAR_KEYWORD:
            continue
        data = p.annotation.data
        if p.kind == p.VAR_POSITIONAL:
            space = spaces.vararg
        elif pname in spaces.kwargs:
            space = spaces.kwargs[pname]
        else:
            space = spaces.args[names.args.index(pname)]
        sp = _spaces(space)
        default = None if p.default is inspect.Parameter.empty else p.default
        if sp == ("param",):
            kind = _interface_kind(data.interface)
            if kind is not None:
                hypers[pname] = Hyper(pname, kind, default, adjust.SPAN if method.identifier == adjust.METHOD
                                      else (0.0, 1.0))
        else:
            models.append(ModelParam(pname, sp, p.kind == p.VAR_POSITIONAL))
    return models, hypers
