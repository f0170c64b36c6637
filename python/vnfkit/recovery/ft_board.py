"""The boundary board of the streaming master (:mod:`.ft_runner`) and the worker-side VNF wrapper.

The board is a shared-memory array with one line per worker: a slab counter, a heartbeat, the
checkpoint the master asked for and the one the worker took (with its cut and fork time), then
``BOARD_ROWS`` rows, row ``k`` holding every worker's determinant-log position when that worker
finished its slab ``k``. The master reads it to cut the workers' logs at slab (= input batch)
boundaries, to tag each output with what it can depend on, and to watch the heartbeats.
:class:`_Bounded` runs the user's VNF inside each worker and writes the worker's line.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..vnf import VNF
from .cow import worker_delta_image, worker_fork_image, worker_precopy, worker_write_image

__all__ = ["AUTO_INLINE_ENTRIES", "BOARD_ROWS", "WORKER_IMAGES"]

#: How a worker writes its checkpoint image: a copy-on-write ``fork`` whose child writes it, ``inline``
#: (the worker writes it itself, stalling for that), ``auto`` (the master picks ``delta`` for a
#: dirty-tracked VNF, :attr:`vnfkit.VNF.dirty_tracked`; else, here, inline while the worker's tables
#: hold at most :data:`AUTO_INLINE_ENTRIES` entries, and fork beyond), or ``delta`` (the worker writes
#: what its tables changed since its previous image, :func:`.cow.worker_delta_image`; the master
#: keeps full images, :class:`.cow.DeltaImages`).
WORKER_IMAGES = ("fork", "inline", "auto", "delta")
#: Table entries (summed over a worker's tables) up to which ``auto`` images inline.
AUTO_INLINE_ENTRIES = 8192

#: Pre-copy stalls a worker keeps the times of (the newest).
PRECOPY_KEPT = 65536

#: Rows of the boundary board per worker (slabs a worker may be ahead of the master's reading).
BOARD_ROWS = 1024
#: Words of a worker's board line before its rows.
_HEAD = 7
_COUNT, _BEAT, _REQ, _DONE, _CUT, _FORK_NS, _FORK_CPU_NS = range(_HEAD)


class _Board:
    """Per worker: a slab counter, a heartbeat (``time.monotonic_ns()`` at its last finished slab),
    the checkpoint asked of it (epoch + 1, written by the master), the one it took (epoch + 1), its
    log position at that cut, how long it stalled for its image (fork or inline write, ns of wall
    time) and the CPU time of that stall (ns; on a shared CPU the wall time also counts the time
    slices of whoever else runs there), then
    ``BOARD_ROWS`` rows of every worker's log position."""

    def __init__(self, queues: int, name: str | None = None) -> None:
        self.queues = queues
        self._owner = name is None
        size = 8 * queues * (_HEAD + BOARD_ROWS * queues)
        # A worker attaching registers the name with the resource tracker it shares with the
        # parent (spawn), where the creator registered it already: the creator's unlink clears it.
        self._shm = shared_memory.SharedMemory(name=name, create=self._owner, size=size)
        self.words = np.ndarray((queues, _HEAD + BOARD_ROWS * queues), dtype=np.uint64, buffer=self._shm.buf)
        self._stride = _HEAD + BOARD_ROWS * queues
        buf = self._shm.buf
        assert buf is not None  # an open segment
        self._flat = buf.cast("Q")  # scalar reads without a numpy scalar each time
        if self._owner:
            self.words[:] = 0

    @property
    def name(self) -> str:
        return self._shm.name

    def row(self, q: int, k: int) -> np.ndarray:
        """Every worker's log position when worker `q` had processed its slab `k`."""
        at = _HEAD + (k % BOARD_ROWS) * self.queues
        return self.words[q, at:at + self.queues]

    def slabs(self, q: int) -> int:
        return self._flat[q * self._stride + _COUNT]

    def beat_ns(self, q: int) -> int:
        return self._flat[q * self._stride + _BEAT]

    def image_pending(self, q: int) -> bool:
        """A checkpoint was asked of worker `q` and it has not taken it yet."""
        line = q * self._stride
        return self._flat[line + _REQ] > self._flat[line + _DONE]

    def request(self, epoch: int) -> None:
        """Ask every worker for checkpoint `epoch` (taken before its next slab)."""
        self.words[:, _REQ] = epoch + 1

    def taken(self, q: int, epoch: int) -> tuple[int, float, float] | None:
        """(log position of the cut, seconds it stalled for its image, CPU seconds of that stall)
        once worker `q` took checkpoint `epoch`."""
        if int(self.words[q, _DONE]) < epoch + 1:
            return None
        return int(self.words[q, _CUT]), int(self.words[q, _FORK_NS]) / 1e9, int(self.words[q, _FORK_CPU_NS]) / 1e9

    def close(self) -> None:
        del self.words
        self._flat.release()
        self._shm.close()
        if self._owner:
            self._shm.unlink()


class _Bounded(VNF):
    """Runs in a worker: the user's VNF, plus its row of the boundary board after every slab (the
    row first, then the counter: x86 keeps the stores in order, and the slab's hand-back after);
    before a slab, the checkpoint the master asked for, if it has not taken it yet: the image
    ``f"{ckpt_dir}/ckpt-{epoch}-{queue}"`` written by a forked child (:func:`.cow.worker_fork_image`)
    or by the worker itself (:func:`.cow.worker_write_image`), per `images` (:data:`WORKER_IMAGES`);
    with delta images and `precopy_packets`, else a pre-copy of what its tables changed once it
    processed that many packets since its last image or pre-copy (:func:`.cow.worker_precopy`)."""

    def __init__(self, inner: Callable[[], Any], board_name: str, queues: int, ckpt_dir: str,
                 images: str = "fork", precopy_packets: int = 0) -> None:
        if images not in WORKER_IMAGES:
            raise ValueError(f"images: expected one of {list(WORKER_IMAGES)}, got {images!r}")
        self.inner = inner()
        # delta images: pre-copy what changed (cow.worker_precopy) once the worker processed this
        # many packets since its last image or pre-copy, at a slab boundary
        self._precopy_after = int(precopy_packets) if images == "delta" else 0
        self._since = 0
        #: (wall ns, CPU ns, bytes written) of each pre-copy, the newest PRECOPY_KEPT
        self.precopy_stalls: deque[tuple[int, int, int]] = deque(maxlen=PRECOPY_KEPT)
        self._images = images
        self._board_name = board_name
        self._queues = queues
        self._ckpt_dir = ckpt_dir
        self._board: _Board | None = None
        self._k = 0

    def setup(self, ctx: Any, **config: Any) -> None:
        self.inner.setup(ctx, **config)
        self._board = _Board(self._queues, self._board_name)
        self._line = ctx.queue * self._board._stride  # this worker's line in the board's flat words

    def take_requested(self, ctx: Any) -> None:
        """Take the checkpoint the master asked for unless done already (at a slab boundary)."""
        b = self._board
        if b is None:
            return
        q = ctx.queue
        req = int(b.words[q, _REQ])
        if req > int(b.words[q, _DONE]):
            prefix = os.path.join(self._ckpt_dir, f"ckpt-{req - 1}")
            c0 = time.thread_time_ns()
            if self._images == "delta":
                _, pos, fork_s, _cpu = worker_delta_image(self.inner, ctx, prefix)
            elif self._images == "inline" or (self._images == "auto" and
                                            sum(len(t) for t in ctx.tables.values()) <= AUTO_INLINE_ENTRIES):
                pos, fork_s = worker_write_image(self.inner, ctx, prefix)
            else:
                _, pos, fork_s, _cpu = worker_fork_image(self.inner, ctx, prefix)
            b.words[q, _CUT] = pos
            b.words[q, _FORK_NS] = int(fork_s * 1e9)
            b.words[q, _FORK_CPU_NS] = time.thread_time_ns() - c0
            b.words[q, _DONE] = req
            b.words[q, _BEAT] = time.monotonic_ns()  # alive through the fork
            self._since = 0

    def _precopy(self, ctx: Any) -> None:
        c0 = time.thread_time_ns()
        t0 = time.monotonic_ns()
        done = worker_precopy(self.inner, ctx, self._ckpt_dir)
        if done is not None:
            t1 = time.monotonic_ns()
            self.precopy_stalls.append((t1 - t0, time.thread_time_ns() - c0, done[0]))
        self._since = 0

    def process(self, batch: Any, ctx: Any) -> None:
        # Scalar words through the board's flat memoryview and the row written natively
        # (positions_into): a few hundred nanoseconds a slab, not microseconds of numpy indexing.
        b = self._board
        if b is None:
            self.inner.process(batch, ctx)
            return
        flat, line = b._flat, self._line
        if flat[line + _REQ] > flat[line + _DONE]:
            self.take_requested(ctx)
        elif self._precopy_after and self._since >= self._precopy_after:
            self._precopy(ctx)
        self.inner.process(batch, ctx)
        self._since += len(batch)
        if ctx.shared is not None:
            k = self._k
            n = self._queues
            ctx.shared.positions_into(flat, line + _HEAD + (k % BOARD_ROWS) * n, n)
            self._k = k + 1
            flat[line + _BEAT] = time.monotonic_ns()
            flat[line + _COUNT] = k + 1

    def stats(self) -> dict[str, int]:
        return dict(self.inner.stats())

    def snapshot(self) -> dict[str, Any]:
        return dict(self.inner.snapshot())

    def restore(self, state: dict[str, Any]) -> None:
        self.inner.restore(state)


def _precopy_stalls(vnf: Any, ctx: Any, reset: bool) -> list[tuple[int, int, int]]:
    """Through call_workers: this worker's pre-copy stalls, (wall ns, CPU ns, bytes) each (forgotten
    here with `reset`)."""
    got = list(vnf.precopy_stalls)
    if reset:
        vnf.precopy_stalls.clear()
    return got


def _take_requested(vnf: Any, ctx: Any) -> None:
    """Through call_workers: a worker that got no slab since the request takes its checkpoint now."""
    vnf.take_requested(ctx)


def _inner_visible(vnf: Any, ctx: Any) -> dict[str, dict[Any, int]]:
    """What the outside could see of this worker (the wrapped VNF's counters and stats)."""
    from .oracle import visible_state

    return visible_state([vnf.inner])
