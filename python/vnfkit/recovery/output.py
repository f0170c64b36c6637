"""Output handler: when a processed packet may leave, under each fault-tolerance strategy.

* ``none`` -- no fault tolerance (the baseline): every output leaves at once;
* ``checkpoint`` -- periodic checkpoints only: outputs leave at once (recovery loses everything
  since the last checkpoint, which the oracle shows to be incorrect);
* ``buffer`` -- checkpoint + buffering (Remus, Pico): every output is held until a checkpoint taken
  after it is acknowledged by storage (:meth:`OutputHandler.checkpoint_committed`);
* ``replay`` -- checkpoint + replay (FTMB): output commit. Each output is tagged with the vector of
  determinant-log positions it depends on (:class:`vnfkit.state.OutputCommit`); it leaves once
  storage has acknowledged every one of those records *and* the input record it came from.

Per queue, outputs leave in the order they were emitted. ``on_release(queue, batch)`` receives
them (the outside world); :meth:`OutputHandler.held` counts what waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..state import OutputCommit

__all__ = ["STRATEGIES", "OutputHandler", "check_strategy"]

STRATEGIES = ("none", "checkpoint", "buffer", "replay")


def check_strategy(strategy: object) -> str:
    """`strategy` if it names one of :data:`STRATEGIES`, else ValueError naming the field."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    return strategy


class OutputHandler:
    """Holds and releases outputs per the strategy (see the module docstring)."""

    def __init__(self, strategy: str, queues: int, threads: int,
                 on_release: Callable[[int, Any], None]) -> None:
        self.strategy = check_strategy(strategy)
        self.queues = queues
        self.on_release = on_release
        self.commit = OutputCommit(threads, queues) if strategy == "replay" else None
        self._held: list[deque[tuple[int, Any]]] = [deque() for _ in range(queues)]
        self._ready = [0] * queues  # packets the commit tracker released, not yet handed out
        self._input_acked = 0
        self._ckpt_next = 0
        self.released_packets = 0

    def emit(self, seq: int, queue: int, batch: Any, positions: np.ndarray | None = None,
             ids: np.ndarray | None = None) -> None:
        """`batch` (a processed sub-batch of input `seq`) is ready on `queue`; `ids`: its
        ``packet_id`` column, if the caller has it at hand already."""
        if self.strategy in ("none", "checkpoint"):
            self._release(queue, batch)
            return
        if self.commit is not None:
            if positions is None:
                raise ValueError("positions: the replay strategy needs each output's log-position vector")
            self.commit.tag(queue, np.ascontiguousarray(batch.packet_id if ids is None else ids, dtype=np.uint64),
                            positions)
        self._held[queue].append((seq, batch))

    def ack_determinants(self, thread: int, first: int, count: int) -> None:
        """Storage acknowledged log records [first, first+count) of `thread`."""
        if self.commit is not None and count:
            self.commit.ack_range(thread, first, count)

    def input_acked(self, next_seq: int) -> None:
        """Storage acknowledged every input record below `next_seq`."""
        self._input_acked = max(self._input_acked, next_seq)

    def checkpoint_committed(self, next_input: int) -> None:
        """A checkpoint covering every input below `next_input` is stable (releases buffered outputs)."""
        self._ckpt_next = max(self._ckpt_next, next_input)

    def poll(self) -> int:
        """Release whatever may leave now; returns the number of packets released."""
        before = self.released_packets
        commit = self.commit
        for q, held in enumerate(self._held):
            if not held:
                continue  # nothing tagged on this queue waits: the commit tracker has nothing to release
            if self.strategy == "buffer":
                while held and held[0][0] < self._ckpt_next:
                    self._release(q, held.popleft()[1])
            elif commit is not None:
                ready = self._ready[q] + commit.release_count(q)
                acked = self._input_acked
                while held and held[0][0] < acked and ready >= len(held[0][1]):
                    ready -= len(held[0][1])
                    self._release(q, held.popleft()[1])
                self._ready[q] = ready
        return self.released_packets - before

    def oldest_held_seq(self) -> int | None:
        """Input sequence number of the oldest output waiting to leave (None: nothing waits)."""
        heads = [h[0][0] for h in self._held if h]
        return min(heads) if heads else None

    def held(self) -> int:
        """Packets waiting to leave."""
        return sum(len(b) for h in self._held for _, b in h)

    def _release(self, queue: int, batch: Any) -> None:
        self.released_packets += len(batch)
        self.on_release(queue, batch)
