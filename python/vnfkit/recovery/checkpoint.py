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
a whole image. A :class:`CheckpointChain` folds a self-contained checkpoint and the incremental
ones after it back into whole images; stable storage keeps its checkpoint stream from the newest
self-contained record on.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Checkpoint", "CheckpointChain", "restore_checkpoint", "take_checkpoint"]

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

    @property
    def self_contained(self) -> bool:
        """Whether every table image is whole (no :class:`CheckpointChain` needed to read it)."""
        return not any(self.delta_tables)

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


class CheckpointChain:
    """Whole images from a stream of checkpoints, self-contained and incremental.

    :meth:`add` each checkpoint in stream order: a self-contained one starts the chain afresh, an
    incremental one is applied to the images kept (a :class:`vnfkit.tables.FlowTableImage` per
    table that ever received a delta). :meth:`latest` is the newest checkpoint with whole images,
    equal to what the master would have written self-contained at the same cut. A delta with no
    image to apply it to raises ValueError; one that does not follow the previous delta of its
    table (lost, repeated) raises :class:`vnfkit.tables.SnapshotError`."""

    def __init__(self) -> None:
        self._images: list[dict[str, Any]] = []  # per worker: table name -> bytes or FlowTableImage
        self._last: Checkpoint | None = None
        self._whole: Checkpoint | None = None  # _last with whole images, built on demand

    def add(self, ck: Checkpoint) -> None:
        """Fold `ck`, the next checkpoint of the stream, into the chain."""
        from ..tables import FlowTableImage

        if ck.self_contained:
            self._images = [dict(t) for t in ck.tables]
        else:
            if self._last is None or len(self._images) != len(ck.tables):
                raise ValueError(f"checkpoint {ck.epoch}: incremental, but no earlier checkpoint of its "
                                 f"{len(ck.tables)} workers to apply it to")
            for q, (have, tables) in enumerate(zip(self._images, ck.tables)):
                deltas = set(ck.delta_tables[q]) if q < len(ck.delta_tables) else set()
                for name, data in tables.items():
                    if name not in deltas:
                        have[name] = data
                        continue
                    img = have.get(name)
                    if img is None:
                        raise ValueError(f"checkpoint {ck.epoch}: a delta of worker {q}'s table {name!r}, "
                                         f"which no earlier checkpoint holds")
                    if not isinstance(img, FlowTableImage):
                        img = have[name] = FlowTableImage(img)
                    img.apply(data)
        self._last = ck
        self._whole = None

    @property
    def last(self) -> Checkpoint | None:
        """The newest checkpoint added, as stored (its cut; its table images may be deltas)."""
        return self._last

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint added, with every table image whole (None before any)."""
        if self._last is None:
            return None
        if self._whole is None:
            from ..tables import FlowTableImage

            ck = self._last
            tables = [{n: (t.snapshot() if isinstance(t, FlowTableImage) else t) for n, t in have.items()}
                      for have in self._images]
            self._whole = Checkpoint(ck.epoch, ck.next_input, ck.last_packet_id, list(ck.positions), ck.shared,
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
