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

Writers are fenced by an *epoch* (a generation number) kept in storage. A handle writes under the
epoch it found when it opened storage (:attr:`StableStorage.epoch`); a backup taking over calls
:meth:`StableStorage.fence` *before* it reads what it replays: that raises the stored epoch, and from
then on every commit carrying an older epoch -- the dead master's, including a write it sent before
it died that storage executes only now (a stalled Redis primary resumed) -- is refused. The old
writer's sync then reports :data:`FENCED` (never :data:`OK`) and acknowledges nothing, for good.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FENCED", "OK", "TIMEOUT", "UNAVAILABLE", "NOT_REPLICATED", "StableStorage", "StorageError", "StorageUnavailable",
           "SyncResult", "check_stream"]

#: :attr:`SyncResult.status` values.
OK = "ok"
TIMEOUT = "timeout"  # storage did not answer in time (stalled process, slow disk)
UNAVAILABLE = "unavailable"  # storage refused or dropped the connection (killed process)
NOT_REPLICATED = "not-replicated"  # written on the primary, but no replica confirmed it in time
FENCED = "fenced"  # a newer epoch took over storage (a backup fenced it): this writer may not write

_STREAM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class StorageError(RuntimeError):
    """A storage operation failed in a way the caller must see (bad stream, corrupt data, closed)."""


class StorageUnavailable(StorageError):
    """Storage did not answer a read or a truncation (down, stalled): nothing was read or dropped;
    the same call may succeed once storage returns. ``status``: :data:`TIMEOUT` (it did not answer
    in time) or :data:`UNAVAILABLE`."""

    def __init__(self, message: str, status: str = UNAVAILABLE) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # the status survives a pickle (a pipe)
        return type(self), (str(self), self.status)


def prune(storage: StableStorage, cuts: Iterable[tuple[str, int]]) -> str | None:
    """After a checkpoint became stable: ``storage.truncate(stream, before)`` for every cut, in
    order. Dropping what a checkpoint made useless is housekeeping, so storage not answering is no
    failure: the first cut it did not make is reported as an event line (``"timeout: ..."`` or
    ``"unavailable: ..."``) and the rest is left for the next checkpoint, whose cuts lie past these.
    Returns None when every cut was made."""
    for stream, before in cuts:
        try:
            storage.truncate(stream, before)
        except StorageUnavailable as exc:
            return f"{exc.status}: records of {stream!r} below {before} not dropped yet ({exc})"
    return None


_checked_streams: set[str] = set()  # names that passed check_stream (a few per process)


def check_stream(stream: object) -> str:
    """`stream` if it is a valid stream name (1-128 of letters, digits, '_', '.', '-')."""
    if type(stream) is str and stream in _checked_streams:
        return stream
    if not isinstance(stream, str):
        raise TypeError(f"stream: expected a str, got {type(stream).__name__}")
    if not _STREAM_RE.match(stream):
        raise ValueError(f"stream: need 1-128 letters, digits, '_', '.' or '-', got {stream!r}")
    if type(stream) is str and len(_checked_streams) < 4096:
        _checked_streams.add(stream)
    return stream


def check_record(record: object) -> bytes:
    if not isinstance(record, (bytes, bytearray, memoryview)):
        raise TypeError(f"record: expected bytes, got {type(record).__name__}")
    return record if type(record) is bytes else bytes(record)  # bytes are immutable: no copy needed


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
        self._epoch: int | None = None  # the epoch this handle writes under (None: not known yet)
        self._fenced = ""  # why this handle may no longer write ("" while it may)

    @property
    def epoch(self) -> int | None:
        """The epoch this handle writes under (None while storage has not answered yet: the first
        commit then adopts the stored one)."""
        return self._epoch

    @property
    def fenced(self) -> bool:
        """True once storage refused a commit of this handle because a newer epoch took over."""
        return bool(self._fenced)

    def fence(self, timeout_s: float = 1.0) -> int:
        """Take over storage: raise its epoch above every epoch in use, write under the new one from
        now on, and return it. Call it before reading what a failover replays: a commit under an
        older epoch (the dead master's, even one already sent and executed late) is refused from
        then on. Records this handle queued stay queued (they are written under the new epoch).
        Raises :class:`StorageUnavailable` if storage does not answer within `timeout_s` (a retry
        raises the epoch again, harmlessly)."""
        self._check_open()
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise ValueError(f"timeout_s: must be a positive number, got {timeout_s!r}")
        self._epoch = self._fence(float(timeout_s))
        self._fenced = ""
        return self._epoch

    @abstractmethod
    def _fence(self, timeout_s: float) -> int:
        """Raise the stored epoch above this handle's and any stored one; return the new epoch."""

    # ---- writing
    def append(self, stream: str, record: bytes | bytearray | memoryview) -> int:
        """Queue `record` on `stream`; returns its offset (stable once ``acked(stream) > offset``)."""
        # called once or twice per input batch: the checks inline for the common case (an open
        # handle, a stream name seen before, a bytes record), the helpers for everything else
        if self._closed:
            self._check_open()
        if type(stream) is not str or stream not in _checked_streams:
            stream = check_stream(stream)
        data = record if type(record) is bytes else check_record(record)
        off = self._next.get(stream)
        if off is None:
            off = self._acked.get(stream, 0)
        self._next[stream] = off + 1
        q = self._queued.get(stream)
        if q is None:
            q = self._queued[stream] = []
        q.append((off, data))
        return off

    def append_many(self, stream: str, records: Iterable[bytes]) -> list[int]:
        return [self.append(stream, r) for r in records]

    def sync(self, timeout_s: float = 1.0) -> SyncResult:
        """Make every queued record stable (group commit); see the module docstring."""
        if self._closed:
            self._check_open()
        if type(timeout_s) is not float or not timeout_s > 0:  # a positive float: the common case, checked inline
            if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
                raise ValueError(f"timeout_s: must be a positive number, got {timeout_s!r}")
        t0 = time.perf_counter()
        # the queues themselves (no copy): a commit adds nothing to them, and clears them only once
        # it succeeded
        queued = {s: q for s, q in self._queued.items() if q}
        if not queued:
            return SyncResult("ok", dict(self._acked), time.perf_counter() - t0)
        if self._fenced:
            return SyncResult(FENCED, dict(self._acked), time.perf_counter() - t0, self._fenced)
        status, detail = self._commit(queued, float(timeout_s))
        if status == FENCED:
            self._fenced = detail
        if status == OK:
            for s, q in queued.items():
                self._acked[s] = q[-1][0] + 1
                q.clear()
        return SyncResult(status, dict(self._acked), time.perf_counter() - t0, detail)

    @abstractmethod
    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        """Write `queued` (stream -> [(offset, record)], ascending, contiguous after what is stable)
        durably; returns (status, detail). Must be idempotent: a failed commit may be retried.
        Must write nothing and return :data:`FENCED` if the stored epoch is above this handle's
        (checked atomically with the write); adopts the stored epoch if this handle's is None."""

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
