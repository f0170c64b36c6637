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
from .checkpoint import Checkpoint, CheckpointChain, restore_checkpoint
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
    """The newest checkpoint in `storage`'s checkpoint stream, with whole images (an incremental
    one folded onto the records the stream keeps before it), or None if there is none yet."""
    chain = CheckpointChain()
    for _off, rec in storage.read(CKPT_STREAM):
        chain.add(Checkpoint.from_bytes(rec))
    return chain.latest()


@dataclass
class RecoveryReport:
    """What a failover did and how long each step took (seconds)."""

    #: ``time.monotonic_ns()`` when recover() began (a trial's handover ends here)
    started_ns: int = 0
    restore_s: float = 0.0
    replay_s: float = 0.0
    checkpoint_epoch: int = -1
    replayed_batches: int = 0
    replayed_packets: int = 0
    reexecuted_batches: int = 0
    next_seq: int = 0
    #: every input below it is in the recovered state with the master's own outcomes (the
    #: checkpoint's cut, then the replayed run): the master's held outputs of those inputs may leave
    replayed_to: int = 0
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
        self._ckpt: Checkpoint | None = None  # the newest checkpoint seen (restored, or overtaken by replay)
        self._ckpt_offset = -1
        self._chain = CheckpointChain()
        self._next_seq = 0  # the first input batch not reflected in this backup's state
        self._positions = [0] * queues  # every worker's log position in that state
        #: checkpoints restored so far, and batches replayed ahead of a failure (:meth:`stage`)
        self.restored_epochs = 0
        self.followed_batches = 0

    def _process(self, batch: Any) -> list[tuple[int, Any]]:
        batch.parse()
        outs = self.classifier.split(batch)  # each queue's packets, one native call
        for q, sub in outs:
            self.vnfs[q].process(sub, self.contexts[q])
        return outs

    def stage(self, storage: StableStorage, *, follow: bool = False) -> float:
        """Get ahead of a failure, while the master still runs; returns the seconds it took.

        Restores the newest stable checkpoint if it is newer than what this backup holds (a *warm*
        backup: no restore is left for the failover). With `follow` it also replays, outputs
        suppressed, every stable input batch past that whose determinant record is stable too (a
        *hot* backup, which tracks the master one group commit behind: the failover replays only
        the tail). Call it between the master's group commits; never after :meth:`recover`."""
        if self.live:
            raise RuntimeError("backup: stage() after recover()")
        t0 = time.perf_counter()
        self._stage_checkpoint(storage)
        if follow and self._ckpt is not None:
            dets = dict(storage.read(DET_STREAM, self._next_seq))
            if dets:
                inputs = [(seq, rec) for seq, rec in storage.read(INPUT_STREAM, self._next_seq) if seq in dets]
                ahead = RecoveryReport()
                self._replay_run(inputs, dets, ahead)
                self.followed_batches += ahead.replayed_batches
        return time.perf_counter() - t0

    def _stage_checkpoint(self, storage: StableStorage) -> Checkpoint | None:
        """Restore the newest checkpoint unless this backup is already at or past its cut."""
        # Fold what came since the last look. The stream keeps every record from the oldest that a
        # reader of the newest needs, so after a gap (records dropped meanwhile) the first record
        # read is that one, and a fresh chain starts there.
        recs = storage.read(CKPT_STREAM, self._ckpt_offset + 1)
        if not recs:
            return self._ckpt
        if recs[0][0] != self._ckpt_offset + 1:
            self._chain = CheckpointChain()
        for off, rec in recs:
            self._chain.add(Checkpoint.from_bytes(rec))
            self._ckpt_offset = off
        last = self._chain.last
        assert last is not None
        if self._ckpt is None or last.next_input > self._next_seq:
            ckpt = self._chain.latest()  # whole images, built only to be restored
            assert ckpt is not None
            restore_checkpoint(ckpt, self.vnfs, self.contexts, self.shared)
            self._next_seq = ckpt.next_input
            self._positions = list(ckpt.positions)
            self.restored_epochs += 1
        self._ckpt = last
        return last

    def _replay_run(self, inputs: list[tuple[int, bytes]], dets: dict[int, bytes],
                    rep: RecoveryReport) -> list[tuple[int, bytes]]:
        """Replay the leading run of `inputs` (in order, from ``self._next_seq`` on) that have a
        determinant record, every record forced by one Replayer; returns the inputs after it."""
        run: list[tuple[int, list[bytes]]] = []
        rest_at = len(inputs)
        for i, (seq, rec) in enumerate(inputs):
            if seq != self._next_seq + len(run) or seq not in dets:
                rest_at = i
                break
            run.append((seq, decode_det(dets[seq])[1]))
        if not run:
            return inputs[rest_at:]
        chunks = [c for _, cs in run for c in cs if c]
        if chunks:
            rp = Replayer(self.shared, chunks, start_positions=dict(enumerate(self._positions)))
            for q, ctx in enumerate(self.contexts):
                # the replay context takes the place of ctx.state, which is what every VNF uses
                # (start_positions names every worker)
                ctx.state = rp.context(q)
        else:
            rp = None
        try:
            for (seq, rec), (_, cs) in zip(inputs, run):
                batch = decode_batch(rec)
                for q, sub in self._process(batch):
                    if self.on_replayed is not None:
                        self.on_replayed(q, sub)
                rep.replayed_batches += 1
                rep.replayed_packets += len(batch)
        finally:
            self._end_replay(rp)
        for c in chunks:
            for thread, first, recs in parse_log_chunks(c):
                self._positions[thread] = max(self._positions[thread], first + len(recs))
        self._next_seq = run[-1][0] + 1
        return inputs[rest_at:]

    def recover(self, storage: StableStorage | None, strategy: str) -> RecoveryReport:
        """Fail over: restore (unless :meth:`stage` did), replay, re-execute, go live (module docstring)."""
        rep = RecoveryReport(started_ns=time.monotonic_ns())
        t0 = time.perf_counter()
        ckpt = None
        if storage is not None and strategy != "none":
            ckpt = self._stage_checkpoint(storage)
        if ckpt is not None:
            rep.checkpoint_epoch = ckpt.epoch
        rep.next_seq = rep.replayed_to = self._next_seq
        rep.restore_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        if strategy == "replay" and ckpt is not None and storage is not None:
            inputs = storage.read(INPUT_STREAM, self._next_seq)
            dets = dict(storage.read(DET_STREAM, self._next_seq))
            rest = self._replay_run(inputs, dets, rep)
            rep.replayed_to = self._next_seq
            for seq, rec in rest:
                rep.outputs.extend(self._process(decode_batch(rec)))
                rep.reexecuted_batches += 1
                self._next_seq = seq + 1
            rep.next_seq = self._next_seq
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
