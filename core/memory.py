"""Give memory the process has freed back to the operating system (glibc's allocator keeps it).

Reading a volume in threads and encoding its slices make many slice-sized temporaries; glibc serves
them from per-thread heaps and, once the dynamic mmap threshold has grown past their size, keeps the
freed chunks resident. A long-lived server (Streamlit) then carries tens of megabytes of freed memory
per volume viewed, which adds to the peak of the next run. `malloc_trim(0)` returns the free pages of
every heap (a fraction of a millisecond when there is little to return). Other C libraries: a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _trim():
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return freed heap memory to the OS; True when the C library could (glibc's malloc_trim)."""
    trim = _trim()
    return bool(trim(0)) if trim is not None else False
