"""``.safetensors`` files read into memory the process owns, checked against their header first.

safetensors' own loaders map the file into memory. When such a file is truncated or replaced in
place while its tensors are in use (``cp new.safetensors model.safetensors`` during a run), the next
read of a mapped page ends the whole process with SIGBUS: inside a WebUI, the WebUI dies with no
message. :func:`load_tensors` copies the data into ordinary tensors instead, so a file changing
under a run changes nothing for the tensors already read.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

# safetensors refuses headers over 100 MB; so do we, before reading one into memory
MAX_HEADER_BYTES = 100_000_000

_DTYPES: dict[str, torch.dtype] = {
    name: dtype for name, dtype in {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
        "U8": torch.uint8, "BOOL": torch.bool,
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
    }.items() if dtype is not None
}


_OTHER_DTYPES = {"U16", "U32", "U64"}  # in the format, but not in every torch the WebUIs ship


class TensorFileError(ValueError):
    """A file that is not a complete ``.safetensors`` file; the message names the file."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # byte offsets into the data section
    end: int


@dataclass(frozen=True)
class TensorFileHeader:
    entries: dict[str, TensorEntry]
    data_start: int  # file offset of the data section
    metadata: dict[str, str]


def read_header(path: str | Path) -> TensorFileHeader:
    """The header of a ``.safetensors`` file, checked against the file: every tensor's dtype and
    shape agree with its byte range, and the data section has exactly the length the header says
    (a truncated download or a copy cut short by a full disk is caught here, before a run, not as
    every trial failing)."""
    name = Path(path).name
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise TensorFileError(f"{name} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size > min(total - 8, MAX_HEADER_BYTES):
            raise TensorFileError(f"{name} is not a safetensors file (bad header size)")
        try:
            raw = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TensorFileError(f"{name} is not a safetensors file (unreadable header)") from None
    if not isinstance(raw, dict):
        raise TensorFileError(f"{name} is not a safetensors file (unreadable header)")
    metadata = raw.pop("__metadata__", None) or {}
    entries = {key: _entry(name, key, value) for key, value in raw.items()}
    data_end = max((e.end for e in entries.values()), default=0)
    available = total - 8 - size
    if data_end != available:
        raise TensorFileError(f"{name} is truncated or damaged: its header describes {data_end} bytes of "
                              f"tensor data, the file holds {available} (download or copy it again)")
    return TensorFileHeader(entries, 8 + size, metadata if isinstance(metadata, dict) else {})


def _entry(file: str, key: str, value) -> TensorEntry:
    problem = _entry_problem(value)
    if problem:
        raise TensorFileError(f"{file} is damaged: tensor {key!r} {problem}")
    start, end = value["data_offsets"]
    return TensorEntry(_DTYPES[value["dtype"]], tuple(value["shape"]), start, end)


def _entry_problem(entry) -> str:
    if not isinstance(entry, dict):
        return "has no dtype, shape and offsets"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPES:
        return f"has an unknown dtype {dtype!r}" if dtype not in _OTHER_DTYPES else \
            f"has a dtype this torch cannot read ({dtype})"
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return f"has a bad shape {shape!r}"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(n, int) for n in offsets) or not 0 <= offsets[0] <= offsets[1]):
        return f"has bad data offsets {offsets!r}"
    needed = math.prod(shape) * _DTYPES[dtype].itemsize
    if needed != offsets[1] - offsets[0]:
        return f"spans {offsets[1] - offsets[0]} bytes, its shape {shape} of {dtype} needs {needed}"
    return ""


def load_tensors(path: str | Path, keys: Iterable[str] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The file's tensors (or only ``keys``) in memory of their own, never mapped from the file."""
    return dict(iter_tensors(path, keys, device))


def iter_tensors(path: str | Path, keys: Iterable[str] | None = None,
                 device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) in the file's order, one at a time (what :func:`load_tensors` reads, for a
    caller that needs only one tensor in memory at once)."""
    header = read_header(path)
    wanted = header.entries if keys is None else {k: header.entries[k] for k in keys}
    with open(path, "rb", buffering=0) as f:
        for key, e in sorted(wanted.items(), key=lambda kv: kv[1].start):
            buffer = torch.empty(e.end - e.start, dtype=torch.uint8)
            f.seek(header.data_start + e.start)
            _read_exactly(f, memoryview(buffer.numpy()), Path(path).name, key)
            tensor = buffer.view(e.dtype).reshape(e.shape)
            yield key, tensor if torch.device(device).type == "cpu" else tensor.to(device)


def _read_exactly(f, view: memoryview, file: str, key: str) -> None:
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise TensorFileError(f"{file} ended while reading tensor {key!r} (was the file changed "
                                  "while it was being read?)")
        done += n
