"""Rebuilding sd-mecha recipe graphs without mutating them.

Nodes are memoised by identity, so a subgraph used twice in the input is used twice in the
output too (shared subgraphs stay shared).
"""

from __future__ import annotations

from collections.abc import Callable

from sd_mecha.recipe_nodes import (
    LiteralRecipeNode,
    MergeRecipeNode,
    ModelRecipeNode,
    RecipeNode,
)

NodeHook = Callable[[RecipeNode], RecipeNode | None]


def rebuild(root: RecipeNode, on_model: NodeHook | None = None,
            on_merge_args: Callable[[MergeRecipeNode, dict], dict] | None = None,
            on_literal: NodeHook | None = None) -> RecipeNode:
    """A copy of ``root`` where ``on_model`` / ``on_literal`` may replace model and literal
    nodes and ``on_merge_args`` may replace a merge node's (rebuilt) arguments by name."""
    memo: dict[int, RecipeNode] = {}

    def visit(node):
        if not isinstance(node, RecipeNode):
            return node
        hit = memo.get(id(node))
        if hit is not None:
            return hit
        if isinstance(node, ModelRecipeNode):
            out = (on_model(node) if on_model else None) or node
        elif isinstance(node, LiteralRecipeNode):
            out = on_literal(node) if on_literal is not None else None
            if out is None:
                out = _rebuild_literal(node, visit)
        elif isinstance(node, MergeRecipeNode):
            arguments = {}
            for name, value in node.bound_args.arguments.items():
                arguments[name] = tuple(visit(v) for v in value) if isinstance(value, tuple) \
                    else visit(value)
            if on_merge_args is not None:
                arguments = on_merge_args(node, arguments)
            if all(arguments[k] is node.bound_args.arguments[k] for k in arguments):
                out = node
            else:
                out = _rebind(node, arguments)
        else:
            out = node
        memo[id(node)] = out
        return out

    return visit(root)


def _rebuild_literal(node: LiteralRecipeNode, visit) -> LiteralRecipeNode:
    values = {k: visit(v) for k, v in node.value_dict.items()}
    changed = any(values[k] is not node.value_dict[k] for k in values)
    return LiteralRecipeNode(values, node.model_config, node.merge_space) if changed else node


def _rebind(node: MergeRecipeNode, arguments: dict) -> MergeRecipeNode:
    sig = node.merge_method.get_signature()
    args, kwargs = [], {}
    for name, p in sig.parameters.items():
        if name not in arguments:
            continue
        value = arguments[name]
        if p.kind == p.VAR_POSITIONAL:
            args.extend(value)
        elif p.kind == p.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    bound = sig.bind(*args, **kwargs)
    return MergeRecipeNode(node.merge_method, bound, node.model_config, node.merge_space)


def model_paths(root: RecipeNode) -> list[str]:
    seen: list[str] = []
    for node in root:
        if isinstance(node, ModelRecipeNode) and str(node.path) not in seen:
            seen.append(str(node.path))
    return seen
