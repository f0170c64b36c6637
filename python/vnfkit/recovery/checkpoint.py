"""Checkpointer: a consistent cut of a master's whole state, taken at a batch boundary.

A :class:`Checkpoint` holds, for one master (a set of workers sharing one SharedState):

* every worker's FlowTable images (``ctx.tables``, by name) and its VNF's Python-side state
  (:meth:`vnfkit.VNF.snapshot`);
* the SharedState image (every counter, token bucket, port pool, register);
* the cut: each worker's determinant-log position, the next input sequence number (the first
  logged input batch *not* reflected in the checkpoint) and the last packet id before it.

It must be taken when no batch is in flight on any worker (between two input batches of the
thread runner), so that it is consistent with the logs: replaying the inputs from ``next_input`` on,
forcing the log records from ``positions`` on, rebuilds the master's state exactly.
:func:`restore_checkpoint` puts it back *in place* into a twin set of workers (same VNF class and
configuration, after ``setup``): tables through :meth:`FlowTable.restore_in_place`, so cached
numpy views stay valid, then the shared state and each VNF's own state.

A checkpoint may be *incremental*: for the tables named in its ``delta_tables``, ``tables`` holds
what changed since the previous checkpoint of the same stream (:meth:`FlowTable.take_delta`), not
a whole image, and with ``shared_delta`` its ``shared`` holds the 64-byte blocks of the shared-state
image that differ from the previous checkpoint's (:func:`image_diff`); the other tables (and a
shared image without ``shared_delta``) are whole. A :class:`CheckpointChain` folds a stream of
them back into whole images; stable storage keeps the checkpoint stream from the oldest record a
reader of the newest needs (the one with the oldest of the newest whole images of the items).
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Checkpoint", "CheckpointChain", "image_diff", "image_patch", "restore_checkpoint", "take_checkpoint"]

_FORMAT = 1


@dataclass
class Checkpoint:
    """One consistent cut (see the module docstring). ``pause_s``: how long taking it stopped the master."""

    epoch: int
    next_input: int
    last_packet_id: int
    positions: list[int]
    shared: bytes
    tables: list[dict[str, bytes]]
    vnf_state: list[dict[str, Any]]
    pause_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    #: per worker, the tables whose entry in ``tables`` is a delta against the previous checkpoint
    #: (empty for all: the checkpoint is self-contained)
    delta_tables: list[list[str]] = field(default_factory=list)
    #: whether ``shared`` is an :func:`image_diff` against the previous checkpoint's shared image
    shared_delta: bool = False

    @property
    def self_contained(self) -> bool:
        """Whether every image is whole (no :class:`CheckpointChain` needed to read it)."""
        return not self.shared_delta and not any(self.delta_tables)

    def to_bytes(self) -> bytes:
        """Serialised form for stable storage (pickle protocol 5 of plain data)."""
        return pickle.dumps((_FORMAT, self.__dict__), protocol=5)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Checkpoint:
        fmt, d = pickle.loads(blob)
        if fmt != _FORMAT:
            raise ValueError(f"checkpoint: unknown format {fmt}")
        return cls(**d)

    @property
    def table_bytes(self) -> int:
        """Bytes of all table images (a size indicator for reports)."""
        return sum(len(img) for t in self.tables for img in t.values())


_DIFF_MAGIC = b"VNFKDIFF"
_DIFF_HEAD = struct.Struct("<8sQQII")  # magic, length of the old and of the new image, block, blocks
DIFF_BLOCK = 64


def image_diff(old: bytes, new: bytes, block: int = DIFF_BLOCK) -> bytes:
    """What turns image `old` into `new`: every `block`-byte block of `new` that differs from the
    same block of `old` (and a tail shorter than a block), with their numbers; :func:`image_patch`
    applies it. Both images must have the same length (a shared-state image keeps its length while
    the variables declared stay the same)."""
    if len(old) != len(new):
        raise ValueError(f"image_diff: images of {len(old)} and {len(new)} bytes (a diff needs equal lengths)")
    if block <= 0 or block % 64:
        raise ValueError(f"block: must be a positive multiple of 64, got {block}")
    n = len(new) // block
    # one flag per 8-byte word, read back 8 flags (64 bytes of image) to a uint64
    ne = np.not_equal(np.frombuffer(old, np.uint64, n * block // 8),
                      np.frombuffer(new, np.uint64, n * block // 8)).view(np.uint64)
    changed = np.flatnonzero(ne.reshape(n, block // 64).any(axis=1) if block > 64 else ne).astype(np.uint32)
    blocks = np.frombuffer(new, np.uint8, n * block).reshape(n, block)[changed]
    return b"".join((_DIFF_HEAD.pack(_DIFF_MAGIC, len(old), len(new), block, len(changed)), changed.tobytes(),
                     blocks.tobytes(), new[n * block:]))


def image_patch(old: bytes, diff: bytes) -> bytes:
    """The image :func:`image_diff` ``(old, new)`` was made from: `old` with the blocks of `diff`.
    ValueError if `diff` is damaged or was made against an image of another length."""
    if len(diff) < _DIFF_HEAD.size:
        raise ValueError(f"image diff: {len(diff)} bytes is shorter than its header")
    magic, n_old, n_new, block, count = _DIFF_HEAD.unpack_from(diff, 0)
    if magic != _DIFF_MAGIC or block <= 0 or block % 64 or n_old != n_new:
        raise ValueError("image diff: not a diff made by image_diff (bad header)")
    if n_old != len(old):
        raise ValueError(f"image diff: made against an image of {n_old} bytes, applied to one of {len(old)}")
    n = n_new // block
    at = _DIFF_HEAD.size
    tail = n_new - n * block
    if len(diff) != at + 4 * count + count * block + tail:
        raise ValueError("image diff: its length does not match its header")
    idx = np.frombuffer(diff, np.uint32, count, at)
    if count and int(idx.max()) >= n:
        raise ValueError("image diff: a block number past the image")
    out = np.frombuffer(old, np.uint8).copy()
    if count:
        out[: n * block].reshape(n, block)[idx] = np.frombuffer(diff, np.uint8, count * block, at + 4 * count).reshape(
            count, block)
    if tail:
        out[n * block:] = np.frombuffer(diff, np.uint8, tail, at + 4 * count + count * block)
    return out.tobytes()


class CheckpointChain:
    """Whole images from a stream of checkpoints, self-contained and incremental.

    :meth:`add` each checkpoint in stream order, from any record on: a whole image of an item (a
    worker's table, the shared-state image) replaces what the chain holds of it, and a delta is
    applied to it (a :class:`vnfkit.tables.FlowTableImage` per table that ever received one). A
    delta of an item the chain holds no image of yet is skipped: a stream read from its first kept
    record holds a whole image of every item later on, which supersedes it. :meth:`latest` is the
    newest checkpoint with whole images, equal to what the master would have written
    self-contained at the same cut; ValueError while an item has had no whole image. A delta that
    does not follow the previous delta of its table (lost, repeated) raises
    :class:`vnfkit.tables.SnapshotError`."""

    def __init__(self) -> None:
        self._images: list[dict[str, Any]] = []  # per worker: table name -> bytes or FlowTableImage
        self._missing: list[set[str]] = []  # per worker: tables seen only as deltas so far
        self._shared: bytes | None = None  # the whole shared-state image of the newest checkpoint
        self._last: Checkpoint | None = None
        self._whole: Checkpoint | None = None  # _last with whole images, built on demand

    def add(self, ck: Checkpoint) -> None:
        """Fold `ck`, the next checkpoint of the stream, into the chain."""
        from ..tables import FlowTableImage

        if ck.self_contained or len(self._images) != len(ck.tables):
            if self._images and len(self._images) != len(ck.tables):
                raise ValueError(f"checkpoint {ck.epoch}: {len(ck.tables)} workers, the chain's have "
                                 f"{len(self._images)}")
            self._images = [{} for _ in ck.tables]
            self._missing = [set() for _ in ck.tables]
        for q, (have, tables) in enumerate(zip(self._images, ck.tables)):
            deltas = set(ck.delta_tables[q]) if q < len(ck.delta_tables) else set()
            for name, data in tables.items():
                if name not in deltas:
                    have[name] = data
                    self._missing[q].discard(name)
                    continue
                img = have.get(name)
                if img is None:
                    self._missing[q].add(name)  # superseded by a whole image further on
                    continue
                if not isinstance(img, FlowTableImage):
                    img = have[name] = FlowTableImage(img)
                img.apply(data)
        if not ck.shared_delta:
            self._shared = ck.shared
        elif self._shared is not None:
            self._shared = image_patch(self._shared, ck.shared)
        self._last = ck
        self._whole = None

    @property
    def last(self) -> Checkpoint | None:
        """The newest checkpoint added, as stored (its cut; its table images may be deltas)."""
        return self._last

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint added, with every image whole (None before any)."""
        if self._last is None:
            return None
        if self._whole is None:
            from ..tables import FlowTableImage

            missing = [f"worker {q}'s {sorted(m)}" for q, m in enumerate(self._missing) if m]
            if self._shared is None:
                missing.append("the shared state")
            if missing:
                raise ValueError(f"checkpoint {self._last.epoch}: no whole image yet of {', '.join(missing)} "
                                 f"(a stream read from its first kept record has one)")
            ck = self._last
            assert self._shared is not None
            tables = [{n: (t.snapshot() if isinstance(t, FlowTableImage) else t) for n, t in have.items()}
                      for have in self._images]
            self._whole = Checkpoint(ck.epoch, ck.next_input, ck.last_packet_id, list(ck.positions), self._shared,
                                     tables, ck.vnf_state, ck.pause_s, dict(ck.meta))
        return self._whole


def take_checkpoint(vnfs: Sequence[Any], contexts: Sequence[Any], shared: Any, *, epoch: int, next_input: int,
                    last_packet_id: int) -> Checkpoint:
    """Image every worker's tables and VNF state and the shared state (no batch may be in flight)."""
    if len(vnfs) != len(contexts):
        raise ValueError(f"vnfs/contexts: {len(vnfs)} VNFs but {len(contexts)} contexts")
    t0 = time.perf_counter()
    tables = [{name: t.snapshot() for name, t in ctx.tables.items()} for ctx in contexts]
    state = [v.snapshot() for v in vnfs]
    image = shared.snapshot()
    positions = [int(ctx.state.position) if ctx.state is not None else 0 for ctx in contexts]
    pause = time.perf_counter() - t0
    return Checkpoint(epoch, next_input, last_packet_id, positions, image, tables, state, pause)


def restore_checkpoint(ckpt: Checkpoint, vnfs: Sequence[Any], contexts: Sequence[Any], shared: Any) -> float:
    """Roll a twin set of workers back to `ckpt`, in place; returns the seconds it took."""
    if len(vnfs) != len(ckpt.vnf_state) or len(contexts) != len(ckpt.tables):
        raise ValueError(f"checkpoint has {len(ckpt.vnf_state)} workers, the backup {len(vnfs)}")
    t0 = time.perf_counter()
    for ctx, images in zip(contexts, ckpt.tables):
        missing = set(images) ^ set(ctx.tables)
        if missing:
            raise ValueError(f"checkpoint: tables {sorted(missing)} are not on both sides (same VNF and config?)")
        for name, img in images.items():
            ctx.tables[name].restore_in_place(img)
    shared.restore(ckpt.shared)
    for v, st in zip(vnfs, ckpt.vnf_state):
        v.restore(st)
    return time.perf_counter() - t0
