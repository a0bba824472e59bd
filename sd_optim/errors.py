"""Errors a user can act on."""

from __future__ import annotations

from typing import Any

SHORT_REPR = 200  # characters of a bad value shown in a problem


def shorten(text: str, limit: int = SHORT_REPR) -> str:
    """``text`` cut to ``limit`` characters with "…": a problem never echoes a whole file."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short_repr(value: Any, limit: int = SHORT_REPR) -> str:
    return shorten(repr(value), limit)


NO_VALUE: Any = object()  # a problem about a field as a whole, with no bad value to show


class Problem(str):
    """One thing wrong with a run config: the field path it is about (``payloads[2].steps``), what
    is wrong, and the bad value when there is one. It is also its own text,
    ``field: message, got value``, so it prints, logs and serializes as one line; code that
    places it (the tab's panels, the API) reads :attr:`field`, never the text."""

    field: str
    message: str
    value: Any
    incomplete: bool  # something the set-up still lacks (a half-filled saved set-up loads anyway)

    def __new__(cls, field: str, message: str, value: Any = NO_VALUE, *, incomplete: bool = False):
        got = "" if value is NO_VALUE else f", got {short_repr(value)}"
        self = super().__new__(cls, f"{field}: {message}{got}" if field else f"{message}{got}")
        self.field, self.message, self.value, self.incomplete = field, message, value, incomplete
        return self

    def __reduce__(self):  # str's own would rebuild it from the text alone
        return _rebuild, (self.field, self.message, self.value, self.incomplete)

    def as_dict(self) -> dict[str, str]:
        """For JSON: the field, the message, the bad value as shown (or absent) and the whole text."""
        out = {"field": self.field, "message": self.message, "text": str(self)}
        if self.value is not NO_VALUE:
            out["got"] = short_repr(self.value)
        return out


def _rebuild(field: str, message: str, value: Any, incomplete: bool) -> Problem:
    return Problem(field, message, value, incomplete=incomplete)


def as_problem(problem: str) -> Problem:
    """A :class:`Problem` as is; any other text as a problem about no particular field."""
    return problem if isinstance(problem, Problem) else Problem("", str(problem))


class ConfigError(ValueError):
    """A run config with one or more problems; each names its field path and bad value."""

    def __init__(self, problems: list[Problem]):
        self.problems = [as_problem(p) for p in problems]
        super().__init__("invalid run config:\n" + "\n".join(f"  - {p}" for p in self.problems))


class SpaceError(ConfigError):
    """The optimization guide does not fit the model or the merge method."""


class StudyMismatchError(ValueError):
    """Resuming a study whose trials would not be comparable with this run."""

    def __init__(self, study: str, differences: list[str], action: str = "resume"):
        self.differences = differences
        listed = "\n".join(f"  - {d}" for d in differences)
        if action == "join":
            super().__init__(
                f"cannot join study {study!r}: this worker does not run what the study runs:\n{listed}"
                "\nrun every worker with the same models, method or recipe, space, prompt sets, scorers "
                "and device type")
            return
        super().__init__(
            f"cannot resume study {study!r}: its trials are not comparable with this run:\n{listed}"
            "\nstart a new study, or fork this one (--fork) to reuse its parameter sets"
        )
