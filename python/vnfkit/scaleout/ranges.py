"""Pure helpers on lists of inclusive flow-ID ranges ``(lo, hi, target)`` (sorted, non-overlapping)."""

from __future__ import annotations

from typing import Any

import numpy as np

Range = tuple[int, int, int]
FULL_HI = 0xFFFFFFFF


def check_bounds(lo: Any, hi: Any, what: str = "range") -> tuple[int, int]:
    """(lo, hi) as ints after checking they are 32-bit flow IDs with lo <= hi (errors name `what`)."""
    for v, name in ((lo, "lo"), (hi, "hi")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what}: {name} must be an int, got {type(v).__name__}")
        if not 0 <= int(v) <= FULL_HI:
            raise ValueError(f"{what}: {name}={v} is not a 32-bit flow ID")
    if int(lo) > int(hi):
        raise ValueError(f"{what}: lo={lo} > hi={hi}")
    return int(lo), int(hi)


def check_range(r: Any, what: str) -> Range:
    """A checked (lo, hi, target) rule (TypeError / ValueError naming `what`)."""
    if not isinstance(r, (tuple, list)) or len(r) != 3:
        raise TypeError(f"{what}: expected (lo, hi, target), got {r!r}")
    lo, hi = check_bounds(r[0], r[1], what)
    return lo, hi, int(r[2])


def coalesce(ranges: list[Range]) -> list[Range]:
    """Merge adjacent ranges with the same target."""
    out: list[Range] = []
    for lo, hi, t in ranges:
        if out and out[-1][2] == t and out[-1][1] + 1 == lo:
            out[-1] = (out[-1][0], hi, t)
        else:
            out.append((lo, hi, t))
    return out


def carve(ranges: list[Range], lo: int, hi: int, target: int | None) -> list[Range]:
    """``ranges`` with ``[lo, hi]`` cut out and (unless ``target`` is None) mapped to ``target``."""
    lo, hi = check_bounds(lo, hi)
    out: list[Range] = []
    for a, b, t in ranges:
        if b < lo or a > hi:
            out.append((a, b, t))
            continue
        if a < lo:
            out.append((a, lo - 1, t))
        if b > hi:
            out.append((hi + 1, b, t))
    if target is not None:
        out.append((lo, hi, int(target)))
    out.sort()
    return coalesce(out)


def owned_by(ranges: list[Range], target: int) -> list[tuple[int, int]]:
    """The (lo, hi) intervals of `ranges` that map to `target`."""
    return [(a, b) for a, b, t in ranges if t == target]


def covers(ranges: list[Range], lo: int, hi: int, target: int) -> bool:
    """True when every flow ID of ``[lo, hi]`` maps to ``target``."""
    need = lo
    for a, b, t in coalesce(sorted(ranges)):
        if b < need:
            continue
        if a > need or t != target:
            return False
        if b >= hi:
            return True
        need = b + 1
    return False


__all__ = ["FULL_HI", "Range", "carve", "check_bounds", "check_range", "coalesce", "covers", "owned_by"]
