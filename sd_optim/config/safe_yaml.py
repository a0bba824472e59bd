"""YAML for everything sd-optim reads: safe types only, bounded in size.

``yaml.safe_load`` builds aliases as shared objects, so a few hundred bytes of nested anchors
(a "billion laughs") load quickly but expand to gigabytes once printed, copied or written
back out. Here the document's size with every alias expanded is counted before anything is
built, and the text's length is bounded; errors name the place, never quote the text.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import ConfigError, Problem

MAX_CHARS = 2_000_000  # a run config is a few KB; a generous bound keeps the parser's work small
MAX_NODES = 100_000  # scalars, lists and mappings counted with every alias expanded


class _Refused(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    def compose_document(self):
        node = super().compose_document()
        _check_size(node)
        return node


def _check_size(root: yaml.Node) -> None:
    """Expanded node count of the graph, each shared node counted at every use; a cycle (a
    recursive alias) counts as unbounded."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_NODES:
                raise _Refused
            continue
        if key in sizes:
            continue
        if key in open_:
            raise _Refused
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load(text: str, field: str = "config") -> Any:
    """The YAML data in ``text``; ConfigError naming ``field`` for text that is too large, not
    valid YAML, or expands beyond :data:`MAX_NODES` through aliases."""
    if len(text) > MAX_CHARS:
        raise ConfigError([Problem(field, f"too large for a config ({len(text):,} characters; at most "
                                          f"{MAX_CHARS:,})")])
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except _Refused:
        raise ConfigError([Problem(field, "its anchors and aliases (&name / *name) expand to more than "
                                          f"{MAX_NODES:,} values, or refer to themselves; write the values "
                                          "out")]) from None
    except RecursionError:
        raise ConfigError([Problem(field, "nested too deeply to read")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(field, f"not valid YAML ({_where(e)})")]) from None


def _where(e: yaml.YAMLError) -> str:
    """The parser's complaint and position, without the snippet of text it quotes."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or type(e).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def load_config_mapping(text: str, field: str = "config", *, from_file: bool = True) -> Any:
    """A run config's YAML: a mapping (or nothing). Anything else from a file is refused by its
    type alone, so a file that is not a config (a password file reads as one long string) is not
    echoed; a short line of text given in place of a config is (a mistyped file name)."""
    data = load(text, field)
    if data is not None and not isinstance(data, dict):
        got = f"got a {type(data).__name__}"
        if not from_file and isinstance(data, str) and len(data) <= 200:
            got = f"got {data!r} (a config file's name must end in .yaml, .yml or .json)"
        raise ConfigError([Problem(field, "must be a mapping of fields (models:, payloads:, scorers:, "
                                          f"...), {got}")])
    return data
