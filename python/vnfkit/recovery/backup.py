"""Backup: a passive twin of the master that restores, replays and goes live on failover.

The backup's VNF instances (one per worker, same class and configuration as the master's) are set
up ahead of time -- a backup that is already running makes failover a matter of copying state.
:meth:`Backup.recover` then

1. loads the newest stable checkpoint and restores it *in place* (:mod:`.checkpoint`);
2. for ``replay``: replays every stable logged input since the checkpoint whose determinant record
   is stable too, forcing each logged outcome (:class:`vnfkit.state.Replayer`), outputs
   suppressed -- they were released by the master already or may be; then re-executes the stable
   inputs whose determinants never reached storage normally, outputs *emitted*: none of them can
   have left the master (output commit), so executing them afresh is safe;
3. goes live: :meth:`Backup.process` handles new traffic.

Determinant records (stream ``det``) hold, for one input batch, every worker's log chunk for it:
the record's offset is the input's sequence number (:func:`encode_det` / :func:`decode_det`).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..classify import MultiQueueClassifier
from ..state import Replayer, SharedState, parse_log_chunks
from ..vnf import Context
from .checkpoint import Checkpoint, restore_checkpoint
from .input_log import INPUT_STREAM, decode_batch
from .storage.base import StableStorage

__all__ = ["CKPT_STREAM", "DET_STREAM", "Backup", "RecoveryReport", "decode_det", "encode_det", "latest_checkpoint"]

DET_STREAM = "det"
CKPT_STREAM = "ckpt"
_DET_HEAD = struct.Struct("<4sQI")
_DET_PART = struct.Struct("<II")


def encode_det(seq: int, chunks: list[bytes]) -> bytes:
    """One input batch's determinant record: worker q's log chunk is ``chunks[q]``."""
    parts = [_DET_HEAD.pack(b"VKDR", seq, len(chunks))]
    for q, c in enumerate(chunks):
        parts.append(_DET_PART.pack(q, len(c)))
        parts.append(c)
    return b"".join(parts)


def decode_det(blob: bytes) -> tuple[int, list[bytes]]:
    """Decode one determinant record of the input log: (batch sequence number, the workers' log chunks)."""
    magic, seq, n = _DET_HEAD.unpack_from(blob, 0)
    if magic != b"VKDR":
        raise ValueError("determinant record: bad magic")
    pos = _DET_HEAD.size
    chunks = [b""] * n
    for _ in range(n):
        q, ln = _DET_PART.unpack_from(blob, pos)
        pos += _DET_PART.size
        chunks[q] = blob[pos:pos + ln]
        pos += ln
    return seq, chunks


def det_ranges(chunks: list[bytes]) -> list[tuple[int, int, int]]:
    """(thread, first position, record count) of every chunk of a determinant record."""
    out = []
    for c in chunks:
        if c:
            for thread, first, recs in parse_log_chunks(c):
                out.append((thread, first, len(recs)))
    return out


def latest_checkpoint(storage: StableStorage) -> Checkpoint | None:
    """The newest checkpoint in `storage`'s checkpoint stream, or None if there is none yet."""
    recs = storage.read(CKPT_STREAM)
    return Checkpoint.from_bytes(recs[-1][1]) if recs else None


@dataclass
class RecoveryReport:
    """What a failover did and how long each step took (seconds)."""

    restore_s: float = 0.0
    replay_s: float = 0.0
    checkpoint_epoch: int = -1
    replayed_batches: int = 0
    replayed_packets: int = 0
    reexecuted_batches: int = 0
    next_seq: int = 0
    outputs: list[tuple[int, Any]] = field(default_factory=list)  # re-executed outputs: (queue, batch)


class Backup:
    """A passive backup for one master (see the module docstring).

    Args:
        vnf: VNF class (or factory); config: its ``setup`` keywords; queues: the master's workers.
        on_replayed: optional hook ``(queue, batch)`` called with each replayed (suppressed) output,
            for tests and for a deliberately wrong recovery that releases them anyway.
    """

    def __init__(self, vnf: Callable[[], Any], config: dict[str, Any] | None, queues: int,
                 on_replayed: Callable[[int, Any], None] | None = None) -> None:
        self.queues = queues
        self.shared = SharedState()
        self.classifier = MultiQueueClassifier(queues)
        self.contexts = [Context(q, queues, shared=self.shared, classifier=self.classifier, logged=False)
                         for q in range(queues)]
        self.vnfs = []
        for ctx in self.contexts:
            v = vnf()
            v.setup(ctx, **(config or {}))
            self.vnfs.append(v)
        self.on_replayed = on_replayed
        self._live_states = [ctx.state for ctx in self.contexts]  # put back when a replay ends
        self.live = False

    def _process(self, batch: Any) -> list[tuple[int, Any]]:
        batch.parse()
        outs = []
        for q, idx in enumerate(self.classifier.classify(batch)):
            if len(idx) == 0:
                continue
            sub = batch if len(idx) == len(batch) else batch.select(idx)
            self.vnfs[q].process(sub, self.contexts[q])
            outs.append((q, sub))
        return outs

    def recover(self, storage: StableStorage | None, strategy: str) -> RecoveryReport:
        rep = RecoveryReport()
        ckpt = latest_checkpoint(storage) if storage is not None and strategy != "none" else None
        t0 = time.perf_counter()
        if ckpt is not None:
            restore_checkpoint(ckpt, self.vnfs, self.contexts, self.shared)
            rep.checkpoint_epoch = ckpt.epoch
            rep.next_seq = ckpt.next_input
        rep.restore_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        if strategy == "replay" and ckpt is not None and storage is not None:
            inputs = storage.read(INPUT_STREAM, ckpt.next_input)
            dets = {seq: decode_det(rec)[1] for seq, rec in storage.read(DET_STREAM, ckpt.next_input)}
            chunks = [c for seq in sorted(dets) for c in dets[seq] if c]
            rp = Replayer(self.shared, chunks, start_positions=dict(enumerate(ckpt.positions))) if chunks else None
            replaying = rp is not None
            for seq, rec in inputs:
                batch = decode_batch(rec)
                if replaying and seq in dets:
                    assert rp is not None
                    for q, ctx in enumerate(self.contexts):
                        # the replay context takes the place of ctx.state, which is what every VNF uses
                        # (start_positions names every worker)
                        ctx.state = rp.context(q)
                    for q, sub in self._process(batch):
                        if self.on_replayed is not None:
                            self.on_replayed(q, sub)
                    rep.replayed_batches += 1
                    rep.replayed_packets += len(batch)
                else:
                    if replaying:
                        self._end_replay(rp)
                        replaying = False
                    rep.outputs.extend(self._process(batch))
                    rep.reexecuted_batches += 1
                rep.next_seq = seq + 1
            if replaying:
                self._end_replay(rp)
        rep.replay_s = time.perf_counter() - t1
        self.live = True
        return rep

    def _end_replay(self, rp: Any) -> None:
        if rp is not None:
            rp.finish()
        for ctx, live in zip(self.contexts, self._live_states):
            ctx.state = live

    def process(self, batch: Any) -> list[tuple[int, Any]]:
        """Go-live path: process one (numbered) input batch; returns its (queue, sub-batch) outputs."""
        if not self.live:
            raise RuntimeError("backup: recover() first")
        return self._process(batch)
