"""``__name__`` in a prompt becomes a line of ``<wildcards dir>/name.txt``.

Lines are drawn from a generator seeded by the prompt set's seed, so every trial of a run sees
the same prompts and a resumed run sees them again.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

_PATTERN = re.compile(r"__([A-Za-z0-9_./-]+?)__")
_MAX_DEPTH = 10


class WildcardError(ValueError):
    pass


def expand(text: str, folder: Path | None, seed: int) -> str:
    if "__" not in text:
        return text
    rng = random.Random(seed)
    cache: dict[str, list[str]] = {}

    def pick(match: re.Match) -> str:
        name = match.group(1)
        if folder is None:
            raise WildcardError(f"prompt uses __{name}__ but no wildcards_dir is set")
        if name not in cache:
            path = folder / f"{name}.txt"
            if not path.is_file():
                raise WildcardError(f"wildcard __{name}__: no file {path}")
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            cache[name] = [ln for ln in lines if ln and not ln.startswith("#")]
            if not cache[name]:
                raise WildcardError(f"wildcard __{name}__: {path} has no lines")
        return rng.choice(cache[name])

    for _ in range(_MAX_DEPTH):  # wildcard files may contain wildcards
        new = _PATTERN.sub(pick, text)
        if new == text:
            return text
        text = new
    left = _PATTERN.search(text)
    if left:  # a cycle (a.txt uses __a__) would otherwise reach the model as literal text
        raise WildcardError(f"wildcard __{left.group(1)}__: still unexpanded after {_MAX_DEPTH} levels "
                            "of nesting; do the wildcard files refer to each other in a cycle?")
    return text
