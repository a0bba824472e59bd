"""Fetching a scorer's weight files when asked (``python -m sd_optim scorers download NAME``, the
tab's Download button); nothing is ever downloaded implicitly.

A file is written to ``<file>.part`` beside its place in the scorer models folder, resumed from
there (an HTTP range request) when a connection is cut, checked (size, sha256) and then moved
into place in one step, so a file in place is always whole. Hugging Face files come from
``HF_ENDPOINT`` (huggingface.co by default) with the user's token (``HF_TOKEN`` or
``huggingface-cli login``), or are copied from the hub's cache when it already holds them;
``HF_HUB_OFFLINE`` is respected. A token is never sent to another host a download is redirected to.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import ConfigError, Problem
from ..files.paths import inside
from .base import ScorerError, get_scorer_class
from .files import WeightFile, first_file

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes so far, total bytes or None)

CHUNK = 1 << 20
ATTEMPTS = 4  # a cut connection is resumed this many times before giving up
TIMEOUT = 30.0  # seconds without data before a connection counts as cut


class DownloadError(ScorerError):
    """A download that could not finish; the message says why and what to do."""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def file_url(file: WeightFile) -> str:
    """Where ``file`` is fetched from: the hub's resolve URL of a Hugging Face file, else its URL."""
    if file.hf_repo:
        return (f"{hf_endpoint()}/{file.hf_repo}/resolve/{quote(file.hf_revision, safe='')}/"
                f"{quote(file.hf_file)}")
    return file.url


def _hf_token() -> str | None:
    try:
        from huggingface_hub import get_token
    except ImportError:  # an old hub: the environment variable only
        return os.environ.get("HF_TOKEN") or None
    return get_token()


def _hf_cached(file: WeightFile) -> Path | None:
    """The file in the Hugging Face cache, when the hub already fetched it for another program."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(file.hf_repo, file.hf_file, revision=file.hf_revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, keeps the headers of each redirect response (the hub's checksum is in
    the first), and drops the token when a redirect leaves the host it was meant for."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.seen.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_ONE_AT_A_TIME = threading.Lock()  # two tabs fetching the same file must not share its .part


def download_file(file: WeightFile, models_dir: Path, *, progress: Progress | None = None) -> Path:
    """``file`` in its place under ``models_dir`` (fetched when it is not there yet)."""
    with _ONE_AT_A_TIME:
        return _download_file(file, models_dir, progress)


def _download_file(file: WeightFile, models_dir: Path, progress: Progress | None) -> Path:
    target = inside(models_dir, Path(models_dir) / file.path, "models_dir")
    if target.is_file():
        return target
    if not file.downloadable:
        raise DownloadError(f"{file.name} has no download source: {file.note or 'place it by hand'} at {target}")
    if file.hf_repo and _truthy("HF_HUB_OFFLINE"):
        raise DownloadError(f"{file.name}: HF_HUB_OFFLINE is set, so nothing is fetched from the hub; "
                            f"unset it, or place the file at {target} (source: {file.source})")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    cached = _hf_cached(file) if file.hf_repo else None
    if cached is not None:
        shutil.copyfile(cached, part)
        expected = {"size": cached.stat().st_size, "sha256": ""}
    else:
        expected = _fetch(file, part, progress)
    _check(file, part, expected)
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, target)
    return target


def _fetch(file: WeightFile, part: Path, progress: Progress | None) -> dict[str, Any]:
    """``part`` completed from the source, resuming what it holds; the size and checksum the
    server announced."""
    expected: dict[str, Any] = {"size": None, "sha256": ""}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(file, part, progress, expected)
            return expected
        except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
            if attempt == ATTEMPTS:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"the download of {file.name} was cut at {have} bytes, {ATTEMPTS} times "
                    f"({type(error).__name__}: {error}); run the same download again to resume it "
                    f"from {part}") from error
    raise AssertionError("unreachable")


def _transfer(file: WeightFile, part: Path, progress: Progress | None, expected: dict[str, Any]) -> None:
    url = file_url(file)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "sd-optim"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    token = _hf_token() if file.hf_repo else None
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    redirects = _Redirects()
    opener = urllib.request.build_opener(redirects)
    try:
        response = opener.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is longer than the file: start again
            part.unlink()
            return _transfer(file, part, progress, expected)
        raise DownloadError(_http_problem(file, url, error.code)) from error
    except urllib.error.URLError as error:
        raise DownloadError(f"could not reach {urlsplit(url).netloc} for {file.name}: {error.reason}; "
                            f"check the connection (or HF_ENDPOINT), or place the file by hand "
                            f"(source: {file.source})") from error
    with response:
        _announced(expected, [*redirects.seen, response.headers])
        resumed = response.status == 206
        total = have + int(response.headers.get("Content-Length", 0) or 0) if resumed else \
            int(response.headers.get("Content-Length", 0) or 0) or None
        expected["size"] = expected["size"] or total
        done = have if resumed else 0
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(file.name, done, expected["size"])
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def _announced(expected: dict[str, Any], headers: list[Any]) -> None:
    """The hub's size and sha256 of an LFS file (``X-Linked-Size``, ``X-Linked-Etag``)."""
    for h in headers:
        etag = (h.get("X-Linked-Etag") or "").strip('"').lower()
        if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
            expected["sha256"] = expected["sha256"] or etag
        if h.get("X-Linked-Size", "").isdigit():
            expected["size"] = expected["size"] or int(h["X-Linked-Size"])


def _http_problem(file: WeightFile, url: str, code: int) -> str:
    if code in (401, 403):
        return (f"{file.name}: the server refused it (HTTP {code}) at {url}; a Hugging Face file may need "
                f"a token (HF_TOKEN, or huggingface-cli login) and the model's licence accepted on its page")
    if code == 404:
        return f"{file.name}: not found at {url} (HTTP 404); the source may have moved: {file.source}"
    return f"{file.name}: the server answered HTTP {code} at {url}; try again later"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(file: WeightFile, part: Path, announced: dict[str, Any]) -> None:
    """The size and checksum of the finished ``part`` (the declared ones first, else what the
    server announced); a file that fails is removed."""
    size = file.size or announced.get("size")
    sha = file.sha256 or announced.get("sha256") or ""
    got_size = part.stat().st_size
    problem = ""
    if size is not None and got_size != size:
        problem = f"it has {got_size} bytes, expected {size}"
    elif sha and (got := sha256_of(part)) != sha.lower():
        problem = f"its sha256 is {got}, expected {sha.lower()}"
    if problem:
        part.unlink()
        raise DownloadError(f"{file.name} from {file.source} is not the published file: {problem}; "
                            f"it was removed, nothing was placed")


def download_scorer(name: str, models_dir: Path | str | None, *, progress: Progress | None = None) -> list[Path]:
    """Every file of scorer ``name`` in the models folder (those missing are fetched)."""
    cls = get_scorer_class(name)
    if models_dir is None or str(models_dir).strip() == "":
        raise ConfigError([Problem("models_dir", "is empty: say which folder scorer weights go to "
                                                 "(--models-dir, or the scorer models folder setting)")])
    folder = Path(models_dir).expanduser()
    found = [(file, first_file(cls.places(file, folder))) for file in cls.files]
    return [path or download_file(file, folder, progress=progress) for file, path in found]
