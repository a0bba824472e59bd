"""Where sd-optim may read and write: safe names, writes that stay in their folder, and the
folders a config from the API may name (docs in README.md, "Security").

Core module: the allowed folders are passed in; nothing here knows the WebUI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem

MAX_NAME = 100
# Windows opens these as devices whatever the extension (NUL.txt is NUL)
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
             *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_BAD_CHARS = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')


def name_problem(value: Any) -> str:
    """Why ``value`` cannot be a single file or folder name; "" when it can.

    One path component, the same on every OS: no separators, no ``.``/``..``, no leading ``.``
    (hidden files, ``..x``) or ``-`` (read as an option by command lines), no characters Windows
    refuses, no device names (``CON``, ``NUL.txt``), no trailing dot or space, at most 100 characters."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty name"
    if len(value) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters (has {len(value)})"
    if _BAD_CHARS.search(value):
        return 'must be a single name: no folders (/ or \\), no control characters and none of < > : " | ? *'
    if value[0] in ".-":
        return "must not start with '.' or '-'"
    if value[-1] in ". ":
        return "must not end with '.' or a space"
    if value.split(".")[0].strip().upper() in _RESERVED:
        return "is a reserved device name on Windows"
    return ""


def safe_component(field: str, value: Any) -> str:
    """``value`` when it is a safe single name (see :func:`name_problem`); else ConfigError."""
    problem = name_problem(value)
    if problem:
        raise ConfigError([Problem(field, problem, value)])
    return value


def inside(folder: str | Path, path: str | Path, field: str) -> Path:
    """``path`` resolved (links followed) when it lies inside ``folder`` (resolved too); else
    ConfigError. For writes: a link planted at ``path`` or above it cannot send the write elsewhere."""
    root = Path(folder).resolve()
    target = Path(path)
    if os.path.islink(target):  # a link, dangling or not, is not where we write
        raise ConfigError([Problem(field, "is a symbolic link; refusing to write through it", str(path))])
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError([Problem(field, f"must stay inside {str(root)!r}, got {str(path)!r} (resolves to "
                                          f"{str(resolved)!r})")])
    return resolved


# --- the folders an API request may name ------------------------------------------------------

def split_folders(text: str) -> list[str]:
    """The extra allowed folders setting: folders separated by ';' or new lines."""
    return [p.strip() for p in re.split(r"[;\n]", text or "") if p.strip()]


def under_roots(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """Whether ``path`` (absolute, without ``..``) lies in one of ``roots``.

    By name, not by resolved target: links an admin placed inside an allowed folder (a models
    folder linked to another disk) stay usable; ``..`` is refused before this is asked."""
    p = Path(os.path.normpath(os.path.abspath(Path(path).expanduser())))
    for root in roots:
        r = Path(os.path.normpath(os.path.abspath(Path(root).expanduser())))
        if p == r or r in p.parents:
            return True
    return False


def allowed_problem(field: str, path: str | Path, roots: list[Path]) -> Problem | None:
    """Why a path named by an API request is refused; None when it lies in an allowed folder."""
    text = str(path)
    if ".." in Path(text).parts or ".." in re.split(r"[/\\]", text):
        return Problem(field, "must not contain '..'", text)
    if not under_roots(path, roots):
        return Problem(field, "outside the folders the API may use (the WebUI's models and outputs folders, "
                              "the sd-optim settings' folders, and Settings -> Optimize Merge -> extra "
                              "allowed folders)", text)
    return None


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///…`` URL (None for other URLs and in-memory SQLite)."""
    if not storage.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(storage).database
    except Exception:  # noqa: BLE001 - a malformed URL: opening it reports the problem
        return None
    return Path(database) if database and database != ":memory:" else None


def check_allowed(config, roots: list[Path], *, default_storage: str = "") -> None:
    """Refuse a config from the API that names a file outside ``roots`` (ConfigError listing
    each field). Storage: a SQLite file inside ``roots``, or the settings' own storage URL. A
    sampler by import path: only Optuna's own (importing a module runs its code)."""
    problems = [p for field, path in config.named_paths() if (p := allowed_problem(field, path, roots))]
    sampler = config.optimizer.sampler
    if ("." in sampler or ":" in sampler) and sampler.replace(":", ".").split(".")[0] != "optuna":
        problems.append(Problem("optimizer.sampler", "the API imports samplers from optuna only (importing "
                                                     "a module runs its code); use the tab or the CLI", sampler))
    storage = config.optimizer.storage
    if storage and storage != default_storage:
        file = sqlite_file(storage)
        if file is None and storage.strip() not in ("sqlite://", "sqlite:///:memory:"):
            problems.append(Problem("optimizer.storage", "the API accepts only SQLite files in the allowed "
                                                         "folders or the storage of Settings -> Optimize Merge",
                                    storage))
        elif file is not None:
            problem = allowed_problem("optimizer.storage", config.resolve_path(str(file)), roots)
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError(problems)
