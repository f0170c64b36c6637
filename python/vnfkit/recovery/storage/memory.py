"""In-process stable storage: the embedded default for the demo and the tests.

Records live in this process's memory; a sync acknowledges at once. It survives the death of a
worker (the storage is the harness's, not the worker's), not of the process that holds it.
"""

from __future__ import annotations

from .base import OK, StableStorage, check_offset, check_stream

__all__ = ["MemoryStorage"]


class MemoryStorage(StableStorage):
    """Stable storage in this process's memory (see the module docstring)."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, dict[int, bytes]] = {}

    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        for s, q in queued.items():
            d = self._data.setdefault(s, {})
            for off, rec in q:
                d[off] = rec
        return OK, ""

    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        stream = check_stream(stream)
        start = check_offset(start, "start")
        d = self._data.get(stream, {})
        return [(o, d[o]) for o in sorted(d) if o >= start]

    def streams(self) -> list[str]:
        return sorted(s for s, d in self._data.items() if d)

    def truncate(self, stream: str, before: int) -> None:
        stream = check_stream(stream)
        before = check_offset(before, "before")
        d = self._data.get(stream, {})
        for o in [o for o in d if o < before]:
            del d[o]
