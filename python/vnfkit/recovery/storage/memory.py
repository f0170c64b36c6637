"""In-process stable storage: the embedded default for the demo and the tests.

Records live in this process's memory; a sync acknowledges at once. It survives the death of a
worker (the storage is the harness's, not the worker's), not of the process that holds it.
:meth:`MemoryStorage.attach` opens a second handle on the same records and epoch (another writer or
a backup in the same process), fenced like any other backend.
"""

from __future__ import annotations

from .base import FENCED, OK, StableStorage, check_offset, check_stream

__all__ = ["MemoryStorage"]


class _Store:
    """What every handle of one in-memory storage shares: the records, the acknowledged offsets and
    the epoch."""

    def __init__(self) -> None:
        self.data: dict[str, dict[int, bytes]] = {}
        self.acked: dict[str, int] = {}
        self.epoch = 0


class MemoryStorage(StableStorage):
    """Stable storage in this process's memory (see the module docstring)."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._store = _Store()
        self._data = self._store.data
        self._epoch = 0

    def attach(self) -> MemoryStorage:
        """A new handle on the same storage (same records and epoch), writing under the current
        epoch and seeing every record acknowledged so far."""
        self._check_open()
        h = MemoryStorage()
        h._store = self._store
        h._data = self._store.data
        h._epoch = self._store.epoch
        h._acked = dict(self._store.acked)
        return h

    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        st = self._store
        if self._epoch is not None and self._epoch < st.epoch:
            return FENCED, f"memory: storage epoch is {st.epoch}, this writer's is {self._epoch}"
        for s, q in queued.items():
            d = st.data.setdefault(s, {})
            for off, rec in q:
                d[off] = rec
            st.acked[s] = max(st.acked.get(s, 0), q[-1][0] + 1)
        return OK, ""

    def _fence(self, timeout_s: float) -> int:
        st = self._store
        st.epoch = max(st.epoch, self._epoch or 0) + 1
        for s, a in st.acked.items():  # see what the other handles made stable
            self._acked[s] = max(self._acked.get(s, 0), a)
            self._next[s] = max(self._next.get(s, 0), self._acked[s])
        return st.epoch

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
