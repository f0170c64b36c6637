"""The stable-storage interface shared by every backend (memory, file, Redis).

A backend holds named *streams* of opaque records (determinant-log chunks, logged input batches,
checkpoint images). Records get consecutive *offsets* per stream, starting at 0 and never reused,
even after :meth:`StableStorage.truncate`. Writing is two steps, as in a group commit:

* :meth:`append` queues a record and returns its offset at once (nothing is stable yet);
* :meth:`sync` makes every queued record stable -- one write + fsync (file), one replicated
  transaction acknowledged by ``WAIT 1`` (Redis) -- and returns a :class:`SyncResult`.

``acked(stream)`` is the *acknowledged offset*: every record below it is stable, none at or above it
counts as stable. It only grows, and it is what drives output commit. A failed sync (storage down,
stalled, replica missing) acknowledges nothing, says why in :attr:`SyncResult.status` within its
timeout (never a hang), keeps the records queued, and a later sync retries them.
``read(stream, start)`` returns the stable records from ``start`` on (what a backup may use);
``truncate(stream, before)`` drops records below ``before`` (after a checkpoint made them useless).
A backend that can be away raises :class:`StorageUnavailable` from either when it does not answer.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["OK", "TIMEOUT", "UNAVAILABLE", "NOT_REPLICATED", "StableStorage", "StorageError", "StorageUnavailable",
           "SyncResult", "check_stream"]

#: :attr:`SyncResult.status` values.
OK = "ok"
TIMEOUT = "timeout"  # storage did not answer in time (stalled process, slow disk)
UNAVAILABLE = "unavailable"  # storage refused or dropped the connection (killed process)
NOT_REPLICATED = "not-replicated"  # written on the primary, but no replica confirmed it in time

_STREAM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class StorageError(RuntimeError):
    """A storage operation failed in a way the caller must see (bad stream, corrupt data, closed)."""


class StorageUnavailable(StorageError):
    """Storage did not answer a read or a truncation (down, stalled): nothing was read or dropped;
    the same call may succeed once storage returns."""


def check_stream(stream: object) -> str:
    """`stream` if it is a valid stream name (1-128 of letters, digits, '_', '.', '-')."""
    if not isinstance(stream, str):
        raise TypeError(f"stream: expected a str, got {type(stream).__name__}")
    if not _STREAM_RE.match(stream):
        raise ValueError(f"stream: need 1-128 letters, digits, '_', '.' or '-', got {stream!r}")
    return stream


def check_record(record: object) -> bytes:
    if not isinstance(record, (bytes, bytearray, memoryview)):
        raise TypeError(f"record: expected bytes, got {type(record).__name__}")
    return bytes(record)


@dataclass
class SyncResult:
    """Outcome of one :meth:`StableStorage.sync`: ``status`` (:data:`OK` or why not), the
    acknowledged offset of every stream after it, how long it took, and a human-readable detail."""

    status: str
    acked: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


class StableStorage(ABC):
    """Streams of records with acknowledged offsets (see the module docstring)."""

    #: short backend name ("memory", "file", "redis")
    kind = "abstract"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}  # next offset to hand out per stream
        self._acked: dict[str, int] = {}
        self._queued: dict[str, list[tuple[int, bytes]]] = {}
        self._closed = False

    # ---- writing
    def append(self, stream: str, record: bytes | bytearray | memoryview) -> int:
        """Queue `record` on `stream`; returns its offset (stable once ``acked(stream) > offset``)."""
        self._check_open()
        stream = check_stream(stream)
        data = check_record(record)
        off = self._next.setdefault(stream, self._acked.get(stream, 0))
        self._next[stream] = off + 1
        self._queued.setdefault(stream, []).append((off, data))
        return off

    def append_many(self, stream: str, records: Iterable[bytes]) -> list[int]:
        return [self.append(stream, r) for r in records]

    def sync(self, timeout_s: float = 1.0) -> SyncResult:
        """Make every queued record stable (group commit); see the module docstring."""
        self._check_open()
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise ValueError(f"timeout_s: must be a positive number, got {timeout_s!r}")
        import time

        t0 = time.perf_counter()
        queued = {s: list(q) for s, q in self._queued.items() if q}
        if not queued:
            return SyncResult("ok", dict(self._acked), time.perf_counter() - t0)
        status, detail = self._commit(queued, float(timeout_s))
        if status == OK:
            for s, q in queued.items():
                self._acked[s] = q[-1][0] + 1
                del self._queued[s][: len(q)]
        return SyncResult(status, dict(self._acked), time.perf_counter() - t0, detail)

    @abstractmethod
    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        """Write `queued` (stream -> [(offset, record)], ascending, contiguous after what is stable)
        durably; returns (status, detail). Must be idempotent: a failed commit may be retried."""

    # ---- reading
    def acked(self, stream: str) -> int:
        """The acknowledged offset of `stream`: records below it are stable."""
        return self._acked.get(check_stream(stream), 0)

    def pending(self, stream: str | None = None) -> int:
        """Records queued but not yet acknowledged (on `stream`, or on all streams)."""
        if stream is None:
            return sum(len(q) for q in self._queued.values())
        return len(self._queued.get(check_stream(stream), []))

    @abstractmethod
    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        """The stable records of `stream` with offset >= `start`, as (offset, record), ascending."""

    @abstractmethod
    def streams(self) -> list[str]:
        """Names of the streams that hold stable records."""

    @abstractmethod
    def truncate(self, stream: str, before: int) -> None:
        """Forget the stable records of `stream` below offset `before` (offsets are not reused)."""

    def first(self, stream: str) -> int:
        """Lowest offset still readable on `stream` (after truncation)."""
        recs = self.read(stream)
        return recs[0][0] if recs else self.acked(stream)

    # ---- lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.kind} storage is closed")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> StableStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_offset(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected a non-negative int, got {value!r}")
    return value
