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
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Checkpoint", "restore_checkpoint", "take_checkpoint"]

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
