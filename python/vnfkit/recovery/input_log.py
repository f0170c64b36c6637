"""Input handler: numbers every incoming packet and logs every input batch to stable storage.

Packet ids are global and monotonic (the first packet gets ``first_id``), assigned on arrival,
before the master sees the batch; every shared-state access is logged against them. Each input
batch becomes one record of the ``input`` stream, whose offset is the batch's *input sequence
number*: the packets' bytes, timestamps and ids (:func:`encode_batch`). The backup reads them back
(:func:`decode_batch`) to replay the inputs since the last checkpoint; records before a checkpoint's
``next_input`` are truncated once that checkpoint is stable.

The input handler is a component of its own, apart from the master's workers: it keeps every record
it logged until storage acknowledges it (:meth:`InputHandler.unacknowledged`). When the master dies
while storage is away, those inputs -- none of whose outputs can have left (output commit) -- are
still here, to be handed to the backup once it has recovered what storage holds.
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np

from .. import _core
from .storage.base import StableStorage

__all__ = ["INPUT_STREAM", "InputHandler", "decode_batch", "encode_batch"]

INPUT_STREAM = "input"
_HEAD = struct.Struct("<4sII")  # magic, packets, data bytes
#: Records the input handler keeps before it looks for acknowledged ones to drop (it looks at once
#: when asked what is unacknowledged or held).
FORGET_EVERY = 32


def encode_batch(batch: _core.PacketBatch) -> bytes:
    """One input batch as bytes: packets, arrival timestamps, packet ids (decisions are not kept).

    Layout: ``"VKIB"``, u32 packets, u32 data bytes (little-endian), then the offsets (u32,
    packets + 1), ``ts_ns`` and ``packet_id`` (u64 each) and the packet bytes, written natively in
    one copy (:func:`vnfkit._core.encode_input_record`). On x86 the copy bypasses the cache
    (non-temporal stores): a record is read again only by a backup, and the ~50 ms of records kept
    until a checkpoint prunes them would otherwise push the master's own data out of it."""
    return _core.encode_input_record(batch)


def decode_batch(blob: bytes) -> _core.PacketBatch:
    """The batch :func:`encode_batch` wrote (unparsed; ids and timestamps restored), in one native
    call (:func:`vnfkit._core.decode_input_record`); ValueError for a damaged record."""
    return _core.decode_input_record(bytes(blob))


class InputHandler:
    """Steers input batches to the current master, numbering and logging them first.

    Args:
        storage: where input records go (stream :data:`INPUT_STREAM`), or None (no logging: the
            no-fault-tolerance baseline and checkpoint-only).
        first_id: id of the first packet.
    """

    def __init__(self, storage: StableStorage | None, first_id: int = 0) -> None:
        self.storage = storage
        self.next_id = int(first_id)
        self.next_seq = storage.acked(INPUT_STREAM) if storage is not None else 0
        self._unacked: deque[tuple[int, bytes]] = deque()  # (seq, record) logged, not acknowledged yet

    def admit(self, batch: _core.PacketBatch) -> int:
        """Number `batch`'s packets and queue its record; returns its input sequence number."""
        n = len(batch)
        if self.storage is None:
            batch.packet_id[:] = np.arange(self.next_id, self.next_id + n, dtype=np.uint64)
            self.next_id += n
            seq = self.next_seq
        else:
            rec = _core.encode_input_record(batch, self.next_id)  # the ids, and the record, in one call
            self.next_id += n
            seq = self.storage.append(INPUT_STREAM, rec)
            if seq != self.next_seq:
                raise RuntimeError(f"input log: storage gave offset {seq}, expected {self.next_seq}")
            if len(self._unacked) >= FORGET_EVERY:  # the acknowledged ones are dropped a few at a time
                self._forget_acked()
            self._unacked.append((seq, rec))
        self.next_seq = seq + 1
        return seq

    def _forget_acked(self) -> None:
        assert self.storage is not None
        acked = self.storage.acked(INPUT_STREAM)
        while self._unacked and self._unacked[0][0] < acked:
            self._unacked.popleft()

    def unacknowledged(self, start: int = 0) -> list[tuple[int, _core.PacketBatch]]:
        """The batches with sequence number >= `start` that this handler logged and storage has not
        acknowledged (yet), in order, as logged (unparsed): what it re-delivers to a backup."""
        if self.storage is None:
            return []
        self._forget_acked()
        return [(seq, decode_batch(rec)) for seq, rec in self._unacked if seq >= start]

    def held(self) -> tuple[int, int]:
        """(batches, packets) logged and not acknowledged by storage: kept here until it does."""
        if self.storage is None:
            return 0, 0
        self._forget_acked()
        return len(self._unacked), sum(_HEAD.unpack_from(rec, 0)[1] for _, rec in self._unacked)

    def logged(self, start: int) -> list[tuple[int, _core.PacketBatch]]:
        """The stable input batches with sequence number >= `start` (what a backup replays)."""
        if self.storage is None:
            return []
        return [(seq, decode_batch(rec)) for seq, rec in self.storage.read(INPUT_STREAM, start)]
