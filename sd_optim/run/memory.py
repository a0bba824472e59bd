"""Giving memory back after a run or a results action, and measuring what the process holds.

Freed tensors go back to the C allocator, not always to the operating system: glibc keeps freed
blocks of up to 32 MB in its arenas (the mmap threshold grows after large frees), so a WebUI
that merged a few GB keeps them resident until ``malloc_trim`` hands the free pages back.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys


def release_memory() -> None:
    """Collect garbage, empty the CUDA cache when CUDA is in use, and trim the C heap (glibc)."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to find it unused
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return  # musl, macOS and Windows have no malloc_trim; their allocators return memory themselves
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resident_bytes() -> int | None:
    """The process's resident memory (Linux ``/proc/self/statm``), or ``None`` elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
