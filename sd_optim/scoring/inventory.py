"""What every registered scorer is and whether its weight files are in the scorer models folder:
the ``scorers`` command's list (and its JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import available_scorers, get_scorer_class
from .files import first_file


def inventory(models_dir: Path | str | None) -> list[dict[str, Any]]:
    """One entry per scorer: ``name``, ``summary``, ``installed`` (every file found, looked for
    with the default options), ``files`` (each with where it was looked for and found),
    ``unavailable`` (why this environment cannot run it, or None) and ``offered`` (whether the
    tab offers it: it can run here and is installed or may be ticked before it is)."""
    folder = Path(models_dir).expanduser() if models_dir else None
    out = []
    for name in available_scorers():
        cls = get_scorer_class(name)
        files = []
        for file in cls.files:
            places = cls.places(file, folder)
            entry = file.as_dict(first_file(places))
            entry["looked_for"] = [str(p) for p in places]
            files.append(entry)
        installed, unavailable = all(f["found"] for f in files), cls.unavailable() or None
        out.append({"name": name, "summary": cls.summary, "needs_person": cls.needs_person,
                    "installed": installed, "files": files, "unavailable": unavailable,
                    "offered": not unavailable and (installed or cls.offered_before_download)})
    return out


def inventory_text(entries: list[dict[str, Any]]) -> list[str]:
    """The inventory for people: a line per scorer, and one per file it lacks."""
    lines = []
    for entry in entries:
        missing = [f for f in entry["files"] if not f["found"]]
        state = "ready" if not missing else f"missing {len(missing)} of {len(entry['files'])} files"
        if entry["unavailable"]:
            state = f"unavailable here ({entry['unavailable']})"
        lines.append(f"{entry['name']}: {state} · {entry['summary']}")
        for f in missing:
            size = f" ({f['approx_size']})" if f["approx_size"] else ""
            lines.append(f"    {f['option']}: {f['about']}{size}, from {f['source']}; looked for "
                         + " or ".join(f["looked_for"]))
    return lines
