"""Make ``fork()`` cheap: back a process's private memory with transparent huge pages.

``fork()`` copies the page table of every private anonymous mapping and takes a reference on every
page mapped there. With 4 KiB pages that costs about 0.3 µs per page on this kind of virtual
machine: a worker with 30 MB of small pages (the interpreter's heap, numpy's small arrays) pauses
for ~2.5 ms per fork, whatever the checkpoint writes. A 2 MiB huge page costs one page-table entry
and one reference, so the same memory in huge pages forks in well under a millisecond.

:func:`collapse_private_memory` advises every private, writable, anonymous mapping of at least
2 MiB to use huge pages (``MADV_HUGEPAGE``: later faults there get huge pages) and collapses what
is already mapped into huge pages now (``MADV_COLLAPSE``, Linux 6.1+; synchronous, so call it at a
quiet moment, not per packet). :func:`small_page_kib` reports what is still in small pages (from
``/proc/self/smaps``), the figure that predicts the fork pause. Both are Linux-only and harmless
elsewhere: where the kernel refuses (no THP, old kernel), nothing changes and the result says so.

A write to a huge page shared with a fork child splits that page's mapping (the kernel copies only
the 4 KiB written), so memory the master writes while a child exists drifts back to small pages.
Measured with MazuNAT at 100 k flows per worker (``benches/bench_checkpoint.py``), the small part
fell from ~33 MB to ~28 MB but the fork's CPU time did not fall (5-6 ms either way, on a loaded
box), so the checkpointer leaves this off unless asked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from dataclasses import dataclass

__all__ = ["CollapseReport", "collapse_private_memory", "small_page_kib"]

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
_HUGE = 2 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None
if _libc is not None:
    _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _libc.madvise.restype = ctypes.c_int


@dataclass
class CollapseReport:
    """What :func:`collapse_private_memory` did: mappings advised, bytes it asked to collapse,
    bytes the kernel refused to collapse (busy or unsupported), the small-page KiB left, seconds."""

    mappings: int = 0
    asked_bytes: int = 0
    refused_bytes: int = 0
    small_kib_after: int = 0
    seconds: float = 0.0
    supported: bool = True


def _private_anon_ranges() -> list[tuple[int, int]]:
    """(start, end) of this process's private, writable, anonymous mappings (heap included)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            perms = parts[1]
            name = parts[5] if len(parts) > 5 else ""
            if perms[:2] != "rw" or perms[3] != "p" or name not in ("", "[heap]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi))
    return out


def small_page_kib() -> int:
    """KiB of this process's private anonymous memory mapped in small (4 KiB) pages."""
    total = 0
    anon = huge = 0
    try:
        f = open("/proc/self/smaps")
    except OSError:
        return 0
    with f:
        for line in f:
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1])
            elif line.startswith("AnonHugePages:"):
                huge = int(line.split()[1])
                total += max(0, anon - huge)
                anon = huge = 0
    return total


def collapse_private_memory(min_bytes: int = _HUGE) -> CollapseReport:
    """Advise and collapse every private anonymous mapping of at least `min_bytes` into huge pages
    (see the module docstring); returns a :class:`CollapseReport`."""
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < _HUGE:
        raise ValueError(f"min_bytes: expected an int >= {_HUGE} (one huge page), got {min_bytes!r}")
    rep = CollapseReport()
    if _libc is None:
        rep.supported = False
        return rep
    t0 = time.perf_counter()
    for lo, hi in _private_anon_ranges():
        a = (lo + _HUGE - 1) // _HUGE * _HUGE  # the 2 MiB-aligned interior: only it can be huge
        b = hi // _HUGE * _HUGE
        if b - a < min_bytes:
            continue
        if _libc.madvise(ctypes.c_void_p(lo), hi - lo, MADV_HUGEPAGE) != 0:
            rep.supported = False
            continue
        rep.mappings += 1
        rep.asked_bytes += b - a
        if _libc.madvise(ctypes.c_void_p(a), b - a, MADV_COLLAPSE) != 0:
            rep.refused_bytes += b - a  # EINVAL on kernels before 6.1, EAGAIN/ENOMEM when busy
    rep.small_kib_after = small_page_kib()
    rep.seconds = time.perf_counter() - t0
    return rep
