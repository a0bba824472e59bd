"""Wildcards in prompts, as users write them:

- ``__name__`` becomes a line of ``<wildcards dir>/name.txt`` (``__dir/name__``: of
  ``<wildcards dir>/dir/name.txt``; a wildcard file's lines may hold wildcards in turn);
- ``{a|b|c}`` becomes one of its alternatives (they may hold wildcards and braces in turn).

Everything is drawn from one generator seeded by the prompt set's seed, so every trial of a run
sees the same prompts and a resumed run sees them again. A name cannot leave the wildcards
folder (no ``..``, no absolute path).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

_PATTERN = re.compile(r"__([A-Za-z0-9_./-]+?)__")
_CHOICE = re.compile(r"\{([^{}]*\|[^{}]*)\}")  # the innermost braces with a "|": {a|b|c}
_MAX_DEPTH = 10


class WildcardError(ValueError):
    pass


def expand(text: str, folder: Path | None, seed: int) -> str:
    if "__" not in text and "{" not in text:
        return text
    rng = random.Random(seed)
    cache: dict[str, list[str]] = {}

    def pick(match: re.Match) -> str:
        name = match.group(1)
        if name not in cache:
            cache[name] = _lines(name, folder)
        return rng.choice(cache[name])

    def choose(match: re.Match) -> str:
        return rng.choice(match.group(1).split("|")).strip()

    for _ in range(_MAX_DEPTH):  # wildcard files and alternatives may hold more of both
        new = _CHOICE.sub(choose, _PATTERN.sub(pick, text))
        if new == text:
            return text
        text = new
    left = _PATTERN.search(text) or _CHOICE.search(text)
    if left:  # a cycle (a.txt uses __a__) would otherwise reach the model as literal text
        raise WildcardError(f"wildcard {left.group(0)}: still unexpanded after {_MAX_DEPTH} levels "
                            "of nesting; do the wildcard files refer to each other in a cycle?")
    return text


def _lines(name: str, folder: Path | None) -> list[str]:
    """The lines ``__name__`` draws from: ``<folder>/<name>.txt`` without blanks and ``#`` comments."""
    if folder is None:
        raise WildcardError(f"prompt uses __{name}__ but no wildcards_dir is set")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise WildcardError(f"wildcard __{name}__: a name is file names under the wildcards folder joined "
                            "by '/', without '.' or '..' parts")
    path = folder.joinpath(*parts[:-1], f"{parts[-1]}.txt")
    if not path.is_file():
        searched = path.parent if path.parent.is_dir() else folder
        there = sorted(p.stem for p in searched.glob("*.txt"))[:12] if searched.is_dir() else []
        raise WildcardError(f"wildcard __{name}__: no file {path} (searched {searched}"
                            f"{'; it has ' + ', '.join(there) if there else ''})")
    if not path.resolve().is_relative_to(folder.resolve()):  # a link out of the folder
        raise WildcardError(f"wildcard __{name}__: {path} leads out of the wildcards folder {folder}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise WildcardError(f"wildcard __{name}__: {path} has no lines")
    return lines
