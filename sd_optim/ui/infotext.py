"""Prompt sets from images: the A1111 WebUI's infotext (its "parameters" PNG text chunk) read back
into the fields of a prompt set.

The format, as A1111 writes it (``modules/processing.py`` create_infotext) and reads it
(``modules/infotext_utils.py`` parse_generation_parameters)::

    a castle on a hill,
    golden hour
    Negative prompt: blurry,
    lowres
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x768, ...

The prompt's lines, then from a line starting "Negative prompt:" the negative prompt's, then one
line of "Key: value" pairs, where a value holding a comma, colon or newline is a JSON string.
That last line counts only when it holds three pairs or more (else it is prompt text, as in
A1111). No gradio here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO, Any

NEGATIVE = "Negative prompt:"
# A1111 labels: a word character, then word characters, spaces, "-" and "/"
_LABEL = re.compile(r"\w[\w \-/]+$")
_SIZE = re.compile(r"(\d+)x(\d+)")
# infotext label -> (prompt set field, conversion); sampler names are kept as written, so an
# older "DPM++ 2M Karras" stays one sampler name and only "Schedule type" gives the scheduler
FIELDS = {
    "Steps": ("steps", int),
    "Sampler": ("sampler", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
}
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


def parse_infotext(text: str) -> dict[str, Any]:
    """The prompt set fields an infotext holds: ``prompt`` (str), ``negative_prompt`` (str, when
    its line is there), ``steps``, ``seed``, ``width``, ``height`` (int), ``cfg_scale`` (float),
    ``sampler`` and ``scheduler`` (str), each only when present.

    Raises ValueError when the text has no line of generation parameters, or a field's value is
    not of its kind."""
    *lines, last = text.strip().split("\n")
    found = infotext_pairs(last)
    pairs = dict(found)  # a repeated label: the last value, as in A1111
    if len(found) < 3:
        snippet = text.strip()[:60].replace("\n", " ")
        raise ValueError("not an A1111 infotext: no line of generation parameters such as "
                         f"'Steps: 20, Sampler: Euler a, CFG scale: 7' (text: {snippet!r})")
    prompt, negative = [], None
    for line in (line.strip() for line in lines):
        if line.startswith(NEGATIVE):  # on any line, as in A1111
            line = line[len(NEGATIVE):].strip()
            negative = negative if negative is not None else []
        (prompt if negative is None else negative).append(line)

    # A1111 drops the empty lines that open either prompt
    fields: dict[str, Any] = {"prompt": "\n".join(prompt).lstrip("\n")}
    if negative is not None:
        fields["negative_prompt"] = "\n".join(negative).lstrip("\n")
    for label, (name, kind) in FIELDS.items():
        if label in pairs:
            fields[name] = _convert(label, pairs[label], kind)
    if "Size" in pairs:
        size = _SIZE.fullmatch(pairs["Size"])
        if size is None:
            raise ValueError(f"infotext: Size must be WIDTHxHEIGHT, got {pairs['Size']!r}")
        fields["width"], fields["height"] = int(size[1]), int(size[2])
    return fields


def infotext_pairs(line: str) -> list[tuple[str, str]]:
    """The ``(label, value)`` pairs of an infotext's last line, in order, JSON-quoted values
    decoded. Text that is not a pair (no label before a colon) is skipped."""
    pairs, pos = [], 0
    while (colon := line.find(":", pos)) >= 0:
        # the label is the run of label characters just before the colon
        label = _LABEL.search(line, pos, colon)
        if label is None:
            pos = colon + 1
            continue
        value, pos = _value(line, len(line) - len(line[colon + 1:].lstrip()))
        pairs.append((label[0].strip(), value))
    return pairs


def _value(line: str, start: int) -> tuple[str, int]:
    """The value starting at ``start`` and the position after its comma. A quoted value ends at
    its first unescaped quote, which must be followed by a comma or the line's end (as in
    A1111); one that is not valid JSON is kept as written."""
    if line.startswith('"', start):
        end = _closing_quote(line, start + 1)
        if end is not None and (end + 1 == len(line) or line[end + 1] == ","):
            quoted = line[start:end + 1]
            try:
                return json.loads(quoted), end + 2
            except json.JSONDecodeError:
                return quoted, end + 2
    comma = line.find(",", start)
    end = len(line) if comma < 0 else comma
    return line[start:end].strip(), end + 1


def _closing_quote(line: str, pos: int) -> int | None:
    while pos < len(line):
        if line[pos] == "\\":
            pos += 2
        elif line[pos] == '"':
            return pos
        else:
            pos += 1
    return None


def _convert(label: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"infotext: {label} must be {what}, got {value!r}") from None


def infotext_from_png(path_or_file: str | Path | IO[bytes]) -> str | None:
    """The infotext an image carries: the PNG "parameters" text chunk, or for a JPEG or WebP the
    EXIF UserComment (where A1111 puts it); None when there is none.

    Raises OSError (PIL's UnidentifiedImageError among them) for a file that is not an image."""
    from PIL import Image

    with Image.open(path_or_file) as image:
        text = image.info.get("parameters")
        if text is None and image.format == "PNG":
            image.load()  # text chunks after the image data reach ``info`` on load
            text = image.info.get("parameters")
        if text is None:
            text = _user_comment(image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT))
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text or None


def _user_comment(raw: bytes | str | None) -> str | None:
    """An EXIF UserComment: an 8-byte character code, then the text (A1111 writes "UNICODE" and
    UTF-16 big-endian through piexif; other writers use the file's byte order)."""
    if raw is None or isinstance(raw, str):
        return raw
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16")
        # ASCII text in UTF-16 has its zero bytes first in big-endian, second in little-endian
        big = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace")
    return body.decode("utf-8", errors="replace").rstrip("\0")


def prompt_set_from_png(path: str | Path) -> dict[str, Any]:
    """The prompt set fields of an image's infotext (see :func:`parse_infotext`).

    Raises ValueError naming the file when it carries no infotext or an unreadable one, OSError
    when it is not an image."""
    name = Path(path).name
    text = infotext_from_png(path)
    if text is None:
        raise ValueError(f"{name} has no generation parameters (infotext): no PNG 'parameters' chunk "
                         "or EXIF UserComment; images saved by A1111, Forge or sd-optim carry one")
    try:
        return parse_infotext(text)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
