"""The fast path: a recipe of linear merge methods compiled into one small expression per key and
run with plain tensor operations, instead of sd-mecha's per-key graph walk.

:func:`compile_plan` turns a recipe into a :class:`Plan`: for every key of the model config,
an expression over the cached input tensors with its hyperparameters resolved to numbers
(``("lerp", a, b, 0.3)``), or nothing where sd-mecha would give the key no value. It accepts
``weighted_sum``, ``add_difference``, ``subtract``, ``n_average``, ``perpendicular_component``
(what sd-mecha's ``add_perpendicular`` builds), ``fallback`` (per-key
literals with a default), ``convert_singleton``, the block-config converters (per-block
literals) and a LoRA's conversion to the model config (computed once by sd-mecha through the
``converted`` callback and read as one more input), nested in any way; anything else raises
:class:`Unsupported` and the engine hands the recipe to sd-mecha.

:func:`run_expression` computes one key the way sd-mecha does: inputs cast to the merge dtype,
the methods' own operations in the same order (``torch.lerp``, ``addcmul``, ``-``, sequential
``lerp`` for ``n_average``), and the methods' shortcuts (``alpha`` 0 or 1 returns an input
untouched). The results are bit-identical to ``sd_mecha.merge`` at the same merge dtype. One
shortcut keeps them so and skips the casts: a ``weighted_sum`` of two inputs of the same float16,
bfloat16 or float32 dtype, at merge dtype float32, is one ``torch.lerp`` on the inputs as they
are (half-precision lerp computes in float32 and rounds once, as the cast result is rounded when
the slot stores it).

An expression is a nested tuple, hashable and comparable: the engine keeps the one each key was
last written with and recomputes only the keys whose expression changed (incremental merges).
:class:`PlanCache` keeps the cost of a trial's plan to what changed: when a recipe has the
previous one's structure (the same nodes, models, scalar hyperparameters and literal key sets)
and differs only in literal values, such as a per-block or per-key ``alpha``, only the keys
that read a changed value are compiled again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from sd_mecha.extensions import merge_methods, model_configs
from sd_mecha.recipe_nodes import LiteralRecipeNode, MergeRecipeNode, ModelRecipeNode, RecipeNode

from ..search.blocks import key_to_block

# ("in", path, key) | ("lerp", x, y, w) | ("addc", x, y, w) | ("sub", x, y) | ("avg", xs) | ("perp", x, y)
Expr = tuple
MISSING: Any = None  # the recipe gives the key no value (sd-mecha's StateDictKeyError)
DIRECT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_serials = itertools.count(1)


class Unsupported(Exception):
    """The recipe holds something the fast path does not run (the message says what)."""


@dataclass
class Plan:
    """Per key of the model config, the expression that computes it (absent: no value)."""

    model_config: str
    keys: dict[str, Expr]
    inputs: dict[str, Mapping[str, torch.Tensor]]  # path -> the cached input tensors
    serial: int = field(default_factory=lambda: next(_serials))
    base: int | None = None  # the serial of the plan this one updates; None: compiled afresh
    changed: frozenset[str] = frozenset()  # with a base: the only keys whose expression may differ


Converted = Callable[[RecipeNode], tuple[str, Mapping[str, torch.Tensor]]]


def compile_plan(recipe: RecipeNode, cached: Callable[[str], Mapping[str, torch.Tensor]], model_config: str,
                 merge_dtype: torch.dtype, literal_index: dict[int, int] | None = None,
                 deps: dict[tuple[int, str], list[str]] | None = None, converted: Converted | None = None) -> Plan:
    """The recipe's expression for every key of ``model_config`` (:class:`Unsupported` when it
    holds a node the fast path does not run). With ``literal_index`` (a literal node's id -> its
    number), ``deps`` receives, per (literal, name) read, the keys that read it. ``converted``
    gives a LoRA's conversion to the model config (a name and its tensors, computed once), which
    then enters the plan as one more input."""
    config = model_configs.resolve(model_config)
    compiler = _Compiler(config, cached, merge_dtype, literal_index, deps, converted)
    keys = {}
    for key in config.keys():  # noqa: SIM118 - a ModelConfig is not iterable
        expr = compiler.key(recipe, key)
        if expr is not MISSING:
            keys[key] = expr
    return Plan(model_config, keys, compiler.inputs)


@dataclass
class _Compiled:
    shape: tuple  # the recipe's structure (see recipe_shape), with the model config and merge dtype
    values: list[dict[str, Any]]  # each literal's values, in the order recipe_shape met them
    plan: Plan
    deps: dict[tuple[int, str], list[str]]  # (literal number, name) -> the keys that read it


class PlanCache:
    """The last trial's plan, updated rather than compiled again when only literal values changed."""

    def __init__(self) -> None:
        self._last: _Compiled | None = None

    def clear(self) -> None:
        self._last = None

    def compile(self, recipe: RecipeNode, cached: Callable[[str], Mapping[str, torch.Tensor]], model_config: str,
                merge_dtype: torch.dtype, converted: Converted | None = None) -> Plan:
        literals: list[LiteralRecipeNode] = []
        shape = (model_config, str(merge_dtype), recipe_shape(recipe, literals))
        index = {id(node): i for i, node in enumerate(literals)}
        last, self._last = self._last, None  # nothing stale is kept if compiling fails
        if last is not None and last.shape == shape and _same_inputs(last.plan, cached):
            plan = _update(last, recipe, literals, index, merge_dtype, converted)
            deps = last.deps
        else:
            deps = {}
            plan = compile_plan(recipe, cached, model_config, merge_dtype, index, deps, converted)
        self._last = _Compiled(shape, [dict(node.value_dict) for node in literals], plan, deps)
        return plan


def _same_inputs(plan: Plan, cached: Callable[[str], Mapping[str, torch.Tensor]]) -> bool:
    """Whether the engine still holds the very inputs ``plan`` read (asked every trial)."""
    return all(cached(path) is tensors for path, tensors in plan.inputs.items())


def _update(last: _Compiled, recipe: RecipeNode, literals: list[LiteralRecipeNode], index: dict[int, int],
            merge_dtype: torch.dtype, converted: Converted | None) -> Plan:
    """``last.plan`` with the keys that read a changed literal value compiled again."""
    changed: set[str] = set()
    for i, (old, node) in enumerate(zip(last.values, literals)):
        for name, value in node.value_dict.items():
            if old[name] != value:
                changed.update(last.deps.get((i, name), ()))
    base = last.plan
    compiler = _Compiler(model_configs.resolve(base.model_config), None, merge_dtype, index, None, converted)
    compiler.inputs = base.inputs
    keys = dict(base.keys)
    for key in changed:
        expr = compiler.key(recipe, key)
        if expr is MISSING:  # a structure that reads the same names has the same keys; kept safe
            keys.pop(key, None)
        else:
            keys[key] = expr
    return Plan(base.model_config, keys, base.inputs, base=base.serial, changed=frozenset(changed))


def recipe_shape(node: Any, literals: list[LiteralRecipeNode]) -> Any:
    """What two recipes must share for one's plan to update the other's: the nodes, models,
    methods, scalar values and each literal's key names (appended to ``literals`` in order)."""
    if isinstance(node, ModelRecipeNode):
        config = getattr(node.model_config, "identifier", None)
        return ("model", str(node.path), config, getattr(node.merge_space, "identifier", None))
    if isinstance(node, LiteralRecipeNode):
        literals.append(node)
        if any(issubclass(kind, RecipeNode) for kind in set(map(type, node.value_dict.values()))):
            return ("opaque", next(_serials))  # a recipe inside a literal: compiled afresh each time
        return ("literal", getattr(node.model_config, "identifier", None), tuple(node.value_dict))
    if isinstance(node, MergeRecipeNode):
        args = tuple((name, recipe_shape(value, literals)) for name, value in _arguments(node).items())
        return ("merge", node.merge_method.identifier, args)
    if isinstance(node, (tuple, list)):
        return ("seq", tuple(recipe_shape(value, literals) for value in node))
    if node is None or isinstance(node, (bool, int, float, str)):
        return ("value", type(node).__name__, node)
    return ("opaque", next(_serials))  # a tensor, say: never the same shape twice


class _Compiler:
    def __init__(self, config: Any, cached: Callable[[str], Mapping[str, torch.Tensor]] | None,
                 merge_dtype: torch.dtype, literal_index: dict[int, int] | None = None,
                 deps: dict[tuple[int, str], list[str]] | None = None, converted: Converted | None = None):
        self.config = config
        self.cached = cached
        self.converted = converted
        self.merge_dtype = merge_dtype
        self.inputs: dict[str, Mapping[str, torch.Tensor]] = {}
        self.aliases = config.aliases()
        self.converters = _converters()  # read per compile: a block config may be registered later
        self.literal_index = literal_index or {}
        self.deps = deps
        self.current = ""  # the key being compiled
        # per node (by id; the recipe outlives the compiler): its arguments, a model's (path, tensors)
        self._arguments: dict[int, dict[str, Any]] = {}
        self._models: dict[int, tuple[str, Mapping[str, torch.Tensor]]] = {}
        self._rounded: dict[float, float] = {}

    def key(self, recipe: RecipeNode, key: str) -> Any:
        """The expression of ``key``, or MISSING."""
        self.current = key
        expr = self.value(recipe, key)
        if expr is not MISSING and not isinstance(expr, tuple):
            raise Unsupported(f"the recipe is a number ({expr!r}), not a model")
        return expr

    def value(self, node: Any, key: str) -> Any:
        """A float, an expression, or MISSING for ``key``."""
        if type(node) is float:  # this runs for every node of every key: no isinstance on the way
            return node
        handler = _HANDLERS.get(type(node))
        return self.other_value(node, key) if handler is None else handler(self, node, key)

    def other_value(self, node: Any, key: str) -> Any:
        if isinstance(node, bool) or not isinstance(node, (int, float, RecipeNode)):
            raise Unsupported(f"a hyperparameter of type {type(node).__name__} ({node!r})")
        if isinstance(node, (int, float)):
            return float(node)
        for base, handler in ((ModelRecipeNode, _Compiler.model), (LiteralRecipeNode, _Compiler.literal),
                              (MergeRecipeNode, _Compiler.merge)):
            if isinstance(node, base):
                _HANDLERS[type(node)] = handler  # the next node of this type goes straight there
                return handler(self, node, key)
        raise Unsupported(f"a recipe node of type {type(node).__name__}")

    def model(self, node: ModelRecipeNode, key: str) -> Any:
        found = self._models.get(id(node))
        if found is None:
            found = self._models[id(node)] = self.model_input(node)
        path, tensors = found
        if key in tensors:
            return ("in", path, key)
        for name in self.aliases.get(key, ()):
            if name in tensors:
                return ("in", path, name)
        return MISSING

    def model_input(self, node: ModelRecipeNode) -> tuple[str, Mapping[str, torch.Tensor]]:
        if node.model_config is None or node.model_config.identifier != self.config.identifier:
            config = getattr(node.model_config, "identifier", None)
            raise Unsupported(f"a model in config {config!r}, not {self.config.identifier!r}")
        path = str(node.path)
        tensors = self.inputs.get(path)
        if tensors is None:
            tensors = self.inputs[path] = self.cached(path)
        return path, tensors

    def literal(self, node: LiteralRecipeNode, key: str, lookup: str | None = None) -> Any:
        config = getattr(node.model_config, "identifier", None)
        if lookup is None:
            if config not in (None, self.config.identifier):
                raise Unsupported(f"a literal in config {config!r} outside a converter")
            names = (key, *self.aliases.get(key, ()))
        else:
            names = (lookup,)
        for name in names:
            if name in node.value_dict:
                self.read(node, name)
                return self.scalar_or_expr(node.value_dict[name], key)
        return MISSING

    def read(self, node: LiteralRecipeNode, name: str) -> None:
        """Note that the key being compiled depends on the literal's value ``name``."""
        if self.deps is not None and id(node) in self.literal_index:
            self.deps.setdefault((self.literal_index[id(node)], name), []).append(self.current)

    def scalar_or_expr(self, value: Any, key: str) -> Any:
        if type(value) is float:
            return value
        if isinstance(value, RecipeNode):
            return self.value(value, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unsupported(f"a literal value of type {type(value).__name__} ({value!r})")
        return float(value)

    def merge(self, node: MergeRecipeNode, key: str) -> Any:
        method = node.merge_method.identifier
        args = self._arguments.get(id(node))
        if args is None:
            args = self._arguments[id(node)] = _arguments(node)
        if method == "fallback":
            found = self.value(args["a"], key)
            return self.value(args["default"], key) if found is MISSING else found
        if method == "convert_singleton":
            literal = args["singleton"]
            if not isinstance(literal, LiteralRecipeNode) or len(literal.value_dict) != 1:
                raise Unsupported("convert_singleton of something other than a one-value literal")
            ((name, value),) = literal.value_dict.items()
            self.read(literal, name)
            return self.scalar_or_expr(value, key)
        converter = self.converters.get(method)
        if converter is not None and _is_literal_converter(node):
            return self.block_literal(node, *converter, key)
        if self.converted is not None and is_lora_conversion(node, self.config.identifier):
            return self.model_like(node, key)
        build = _METHODS.get(method)
        if build is None:
            raise Unsupported(f"merge method {method!r}")
        return build(self, args, key)

    def model_like(self, node: MergeRecipeNode, key: str) -> Any:
        """A LoRA's conversion, computed once by sd-mecha: an input like the models."""
        found = self._models.get(id(node))
        if found is None:
            assert self.converted is not None
            found = self._models[id(node)] = self.converted(node)
            self.inputs.setdefault(*found)
        path, tensors = found
        return ("in", path, key) if key in tensors else MISSING

    def block_literal(self, node: MergeRecipeNode, source: str, target: str, key: str) -> Any:
        (literal,) = tuple(node.bound_args.arguments.values())
        if target != self.config.identifier or not isinstance(literal, LiteralRecipeNode):
            raise Unsupported(f"converter {node.merge_method.identifier!r} of a model")
        try:
            block = key_to_block(source, target).get(key)
        except ValueError as error:
            raise Unsupported(str(error)) from None
        return MISSING if block is None else self.literal(literal, key, lookup=block)

    def weight(self, value: Any, name: str) -> float:
        """A hyperparameter as sd-mecha sees it: a number in the merge dtype."""
        if not isinstance(value, float):
            raise Unsupported(f"{name} given as a tensor-valued recipe")
        rounded = self._rounded.get(value)
        if rounded is None:
            rounded = self._rounded[value] = torch.tensor(value, dtype=self.merge_dtype).item()
        return rounded

    def tensor(self, value: Any) -> Any:
        if value is not MISSING and not isinstance(value, tuple):
            raise Unsupported(f"a number ({value!r}) where a model is expected")
        return value


_HANDLERS: dict[type, Callable[[_Compiler, Any, str], Any]] = {}  # a recipe node's type -> its method


def _is_literal_converter(node: MergeRecipeNode) -> bool:
    return all(isinstance(v, LiteralRecipeNode) for v in node.bound_args.arguments.values())


def is_lora_conversion(node: RecipeNode, model_config: str) -> bool:
    """Whether ``node`` converts files of another model config (a LoRA) to ``model_config`` through
    sd-mecha's config converters (``convert_'<config>'_to_…``) only: a value fixed for the run,
    whatever the trial."""
    if isinstance(node, ModelRecipeNode):
        return getattr(node.model_config, "identifier", None) != model_config
    if not isinstance(node, MergeRecipeNode) or not node.merge_method.identifier.startswith("convert_'"):
        return False
    args = tuple(node.bound_args.arguments.values())
    return bool(args) and all(is_lora_conversion(arg, model_config) for arg in args)


def _converters() -> dict[str, tuple[str, str]]:
    """sd-mecha's one-input converters by identifier: (source config, target config)."""
    out = {}
    for converter in merge_methods.get_all_converters():
        inputs = [p.model_config for p in converter.get_params().args]
        target = converter.get_return_type().data.model_config
        if len(inputs) == 1 and inputs[0] is not None and target is not None:
            out[converter.identifier] = (inputs[0].identifier, target.identifier)
    return out


def _arguments(node: MergeRecipeNode) -> dict[str, Any]:
    """The node's arguments by name, defaults included."""
    bound = node.bound_args
    arguments = dict(bound.arguments)
    for name, parameter in bound.signature.parameters.items():
        if name not in arguments and parameter.default is not parameter.empty:
            arguments[name] = parameter.default
    return arguments


# each method as sd-mecha 1.1.8 computes it (sd_mecha/extensions/builtin/merge_methods/linear.py);
# a key any model input lacks has no value, whatever the shortcut would read


def _pair(c: _Compiler, args: dict[str, Any], key: str) -> tuple[Any, Any]:
    """The method's ``a`` and ``b`` inputs for ``key``."""
    return c.tensor(c.value(args["a"], key)), c.tensor(c.value(args["b"], key))


def _pair_and_alpha(c: _Compiler, args: dict[str, Any], key: str) -> tuple[Any, Any, float] | None:
    """``a``, ``b`` and ``alpha`` (a number in the merge dtype), or None where one has no value."""
    (a, b), alpha = _pair(c, args, key), c.value(args["alpha"], key)
    return None if MISSING in (a, b, alpha) else (a, b, c.weight(alpha, "alpha"))


def _weighted_sum(c: _Compiler, args: dict[str, Any], key: str) -> Any:
    found = _pair_and_alpha(c, args, key)
    if found is None:
        return MISSING
    a, b, alpha = found
    if math.isclose(alpha, 0.0):
        return a
    return b if math.isclose(alpha, 1.0) else ("lerp", a, b, alpha)


def _add_difference(c: _Compiler, args: dict[str, Any], key: str) -> Any:
    found = _pair_and_alpha(c, args, key)
    if found is None:
        return MISSING
    a, b, alpha = found
    return a if math.isclose(alpha, 0.0) else ("addc", a, b, alpha)


def _subtract(c: _Compiler, args: dict[str, Any], key: str) -> Any:
    a, b = _pair(c, args, key)
    return MISSING if MISSING in (a, b) else ("sub", a, b)


def _n_average(c: _Compiler, args: dict[str, Any], key: str) -> Any:
    models = tuple(c.tensor(c.value(m, key)) for m in args["models"])
    if not models:
        raise Unsupported("n_average of no models")
    return MISSING if MISSING in models else (models[0] if len(models) == 1 else ("avg", models))


def _perpendicular_component(c: _Compiler, args: dict[str, Any], key: str) -> Any:
    a, b = _pair(c, args, key)
    return MISSING if MISSING in (a, b) else ("perp", a, b)


_METHODS: dict[str, Callable[[_Compiler, dict[str, Any], str], Any]] = {
    "weighted_sum": _weighted_sum, "add_difference": _add_difference, "subtract": _subtract,
    "n_average": _n_average, "perpendicular_component": _perpendicular_component}


def run_expression(expr: Expr, inputs: Mapping[str, Mapping[str, torch.Tensor]], device: torch.device,
                   merge_dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """The value of one key; written into ``out`` (the live tensor) when given and possible,
    else returned as a new tensor (or a cached input itself, which the slot copies)."""
    kind = expr[0]
    if kind == "in":
        return inputs[expr[1]][expr[2]]
    if kind == "lerp" and expr[1][0] == "in" and expr[2][0] == "in" and merge_dtype == torch.float32:
        a, b = inputs[expr[1][1]][expr[1][2]], inputs[expr[2][1]][expr[2][2]]
        if a.dtype == b.dtype and a.dtype in DIRECT_DTYPES and a.shape == b.shape:
            a, b = a.to(device, non_blocking=True), b.to(device, non_blocking=True)
            if out is not None and out.dtype == a.dtype and out.shape == a.shape and out.device == a.device:
                return torch.lerp(a, b, expr[3], out=out)
            return torch.lerp(a, b, expr[3])
    return _emulate(expr, inputs, device, merge_dtype)


def _emulate(expr: Expr, inputs: Mapping[str, Mapping[str, torch.Tensor]], device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
    """``expr`` the way sd-mecha computes it: every input cast to the merge dtype first."""
    kind = expr[0]
    if kind == "in":
        return inputs[expr[1]][expr[2]].to(device=device, dtype=dtype, non_blocking=True)
    if kind == "lerp":
        return torch.lerp(_emulate(expr[1], inputs, device, dtype), _emulate(expr[2], inputs, device, dtype),
                          torch.tensor(expr[3], dtype=dtype, device=device))
    if kind == "addc":
        b = _emulate(expr[2], inputs, device, dtype)
        return _emulate(expr[1], inputs, device, dtype).addcmul(b, torch.tensor(expr[3], dtype=dtype, device=device))
    if kind == "sub":
        return _emulate(expr[1], inputs, device, dtype) - _emulate(expr[2], inputs, device, dtype)
    if kind == "perp":  # b's component perpendicular to a; zeros where that is not a number
        a, b = _emulate(expr[1], inputs, device, dtype), _emulate(expr[2], inputs, device, dtype)
        norm_a = torch.linalg.norm(a)
        result = b - a * (a / norm_a * (b / norm_a)).sum()
        return torch.zeros_like(a) if result.isnan().any() else result
    if kind == "avg":
        result = None
        for i, model in enumerate(expr[1], start=1):
            value = _emulate(model, inputs, device, dtype)
            result = value if result is None else torch.lerp(result, value, 1 / i)
        assert result is not None
        return result
    raise AssertionError(f"unknown expression {kind!r}")
