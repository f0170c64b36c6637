"""Shared aggregate state with determinant logging, output commit and forced replay.

State shared by several workers (per-prefix counters, rate limiters, the NAT port pool, generic
registers, raw byte regions) lives in native, lock-free objects declared on a :class:`SharedState`:
on the heap (threads of one process) or in a POSIX shared-memory segment that worker *processes*
attach (``SharedState.create_shm`` / ``attach_shm``); declaring a variable creates it or maps the
one another worker declared. Every access goes through the calling worker's :class:`RecordingContext` (``shared.context(queue)``;
the VNF author's context is :class:`vnfkit.Context`, whose ``ctx.state`` is one),
which (in logged mode) appends one 24-byte determinant per access to that worker's own log (in the
segment, for a shared-memory state, so it outlives the worker); :class:`OutputCommit` holds emitted
packets until the log positions they depend on are stable; :class:`Replayer` re-executes the
logged inputs on a restored copy, forcing every logged outcome. See docs/shared_state.md.

Batch calls release the GIL, so Python worker threads really run in parallel::

    state = SharedState()                              # or SharedState.create_shm("vnfkit-nat", 64 << 20)
    per_src = state.counters("per_src24", slots=1 << 16, keyed=True)
    pool = state.port_pool("nat_ports", lo=50000, hi=65535)
    ctx = state.context(thread_index)                  # one per worker thread (not thread-safe: concurrent use raises RuntimeError)
    totals = per_src.add(ctx, src24, ones, batch.packet_id)
    ports = pool.allocate(ctx, batch.packet_id[new])   # 0 = exhausted
    commit.tag(queue, batch.packet_id, state.positions())
    storage.write(ctx.drain_chunk())                   # framed, CRC32C-checked bytes
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from ._core import (
    Context as RecordingContext,
    Counters,
    DivergenceError,
    LogFullError,
    OutputCommit,
    PortPool,
    Registers,
    Replayer,
    SharedBuffer,
    SharedState,
    TokenBuckets,
    determinant_dtype,
    encode_log_chunk,
    parse_log_chunks,
)

#: Value returned by ``Counters.add`` when a keyed table is full (the access is counted, not lost silently).
COUNTER_FULL = (1 << 64) - 1
#: Port returned by ``PortPool.allocate`` when the (sub-)pool is exhausted.
PORT_EXHAUSTED = 0
#: Bytes per logged access (one determinant record).
DETERMINANT_BYTES = 24
#: numpy dtype of one determinant record (packet_id, object, op, flags, slot, value).
DETERMINANT_DTYPE = determinant_dtype()

#: Codes of the ``op`` field of a determinant record.
OPS = {
    1: "counter.add",
    2: "counter.read",
    3: "token_bucket.consume",
    4: "port_pool.allocate",
    5: "port_pool.release",
    6: "register.load",
    7: "register.store",
    8: "register.exchange",
    9: "register.add",
    10: "register.compare_exchange",
    11: "clock",
    12: "random",
}


def log_records(chunks: bytes | Iterable[bytes]) -> dict[int, npt.NDArray[np.void]]:
    """Parse log chunks into one record array per thread, ordered by log position.

    Raises DivergenceError if a chunk is damaged (bad magic, truncated, CRC mismatch) or a
    thread's records have a gap.
    """
    if isinstance(chunks, bytes):
        chunks = [chunks]
    per: dict[int, list[tuple[int, npt.NDArray[np.void]]]] = {}
    for blob in chunks:
        for thread, first, recs in parse_log_chunks(blob):
            per.setdefault(thread, []).append((first, recs))
    out: dict[int, npt.NDArray[np.void]] = {}
    for thread, parts in per.items():
        parts.sort(key=lambda p: p[0])
        pos = parts[0][0]
        for first, recs in parts:
            if first != pos:
                raise DivergenceError(f"determinant log of thread {thread}: records [{pos}, {first}) are missing")
            pos += len(recs)
        out[thread] = np.concatenate([r for _, r in parts]) if parts else np.empty(0, DETERMINANT_DTYPE)
    return out


def cas_succeeded(seen: npt.NDArray[np.uint32], expected: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Mask of the ``Registers.compare_exchange`` accesses that took effect."""
    return np.asarray(seen == expected)


__all__ = [
    "COUNTER_FULL",
    "DETERMINANT_BYTES",
    "DETERMINANT_DTYPE",
    "OPS",
    "PORT_EXHAUSTED",
    "RecordingContext",
    "Counters",
    "DivergenceError",
    "LogFullError",
    "OutputCommit",
    "PortPool",
    "Registers",
    "Replayer",
    "SharedBuffer",
    "SharedState",
    "TokenBuckets",
    "cas_succeeded",
    "encode_log_chunk",
    "log_records",
    "parse_log_chunks",
]
