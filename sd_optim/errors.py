"""Errors a user can act on."""

from __future__ import annotations

from typing import Any

SHORT_REPR = 200  # characters of a bad value shown in a problem


def shorten(text: str, limit: int = SHORT_REPR) -> str:
    """``text`` cut to ``limit`` characters with "…": a problem never echoes a whole file."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short_repr(value: Any, limit: int = SHORT_REPR) -> str:
    return shorten(repr(value), limit)


class ConfigError(ValueError):
    """A run config with one or more problems; each names its field path and bad value."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid run config:\n" + "\n".join(f"  - {p}" for p in self.problems))


class SpaceError(ConfigError):
    """The optimization guide does not fit the model or the merge method."""


class StudyMismatchError(ValueError):
    """Resuming a study whose trials would not be comparable with this run."""

    def __init__(self, study: str, differences: list[str]):
        self.differences = differences
        super().__init__(
            f"cannot resume study {study!r}: its trials are not comparable with this run:\n"
            + "\n".join(f"  - {d}" for d in differences)
            + "\nstart a new study, or fork this one (--fork) to reuse its parameter sets"
        )
