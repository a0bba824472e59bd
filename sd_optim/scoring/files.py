"""The weight files scorers need: what each is, where it goes under the scorer models folder, where
it comes from, and finding it on disk.

A scorer declares its files as :class:`WeightFile` values in its ``files`` class attribute; the
``scorers`` command lists them, :mod:`.download` fetches them when asked (never implicitly).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODELS_DIR = "models/sd-optim"  # the scorer models folder, under the WebUI's (or current) folder


@dataclass(frozen=True)
class WeightFile:
    """One file a scorer needs.

    ``path`` is relative to the scorer models folder (``laion_aesthetic/<file>``); ``option`` is
    the scorer option that names another file instead. The source is a Hugging Face repo and file
    (``hf_repo``, ``hf_file``, ``hf_revision``) or a plain HTTPS ``url``. ``size`` (bytes) and
    ``sha256`` are checked after a download where they are published; for a Hugging Face file
    whose checksum is not written here, the hub's own (the LFS sha256 it sends) is checked.
    """

    option: str
    path: str
    about: str  # what the file is, in a few words
    url: str = ""
    hf_repo: str = ""
    hf_file: str = ""
    hf_revision: str = "main"
    size: int | None = None
    sha256: str = ""
    approx_size: str = ""  # for people: "3.7 MB"
    note: str = ""  # another way to get it, or what else works in its place
    # the option names a folder holding this file (and the option's other files), not the file
    in_option_folder: bool = False
    also: tuple[str, ...] = ()  # other file names accepted in its place, in the same folder

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def source(self) -> str:
        """Where it comes from, for people."""
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo} ({self.hf_file})"
        return self.url or "no download source: place the file by hand"

    @property
    def downloadable(self) -> bool:
        return bool(self.hf_repo or self.url)

    def as_dict(self, found: Path | None) -> dict[str, object]:
        """For JSON: the file, its source and size, and where it was found (None: missing)."""
        return {"option": self.option, "path": self.path, "about": self.about, "source": self.source,
                "downloadable": self.downloadable, "size": self.size, "approx_size": self.approx_size,
                "sha256": self.sha256 or None, "found": str(found) if found is not None else None}


def with_alternatives(file: WeightFile, places: Iterable[Path]) -> list[Path]:
    """``places``, each followed by the same place under the file's other accepted names."""
    return [p for place in places for p in (place, *(place.with_name(name) for name in file.also))]


def first_file(candidates: Iterable[Path]) -> Path | None:
    """The first of ``candidates`` that is a file."""
    return next((path for path in candidates if path.is_file()), None)
