"""The thread backend of the runner: one worker thread per queue, in the calling process."""

from __future__ import annotations

import queue as _queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _core
from ..hdr import HdrHistogram
from ..vnf import VNF, Context, ControlState
from .runner import Runner, WorkerError
from .stats import QueueStats, RunResult

__all__ = ["ThreadRunner"]


_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, vnf: VNF, ctx: Context, depth: int) -> None:
        super().__init__(name=f"vnfkit-worker-{ctx.queue}", daemon=True)
        self.vnf = vnf
        self.ctx = ctx
        self.inbox: _queue.Queue[Any] = _queue.Queue(maxsize=depth)
        self.outbox: _queue.Queue[Any] = _queue.Queue()
        self.stats = QueueStats(ctx.queue)
        self.failed = threading.Event()

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            seq, batch, t_in = item
            t0 = time.perf_counter_ns()
            try:
                self.vnf.process(batch, self.ctx)
            except BaseException as exc:  # handed to the caller, never swallowed
                self.failed.set()
                self.outbox.put((seq, exc, t_in, 0))
                return
            t1 = time.perf_counter_ns()
            self.stats.busy_ns += t1 - t0
            # the queue's outputs are in order, so this batch is releasable as soon as it is done
            self.outbox.put((seq, batch, t_in, t1))


class ThreadRunner(Runner):
    """The thread backend: one worker *thread* per queue, all in this process.

    GIL-bound: a VNF's ``process()`` is dozens of numpy and native calls per batch, and those Python
    parts serialize on the one GIL, so more queues do not run faster (measured, 2 thread-queues ran at
    about half the speed of 1). Kept for debugging (one process: breakpoints, ``vnfs`` and
    ``contexts`` inspectable) and for tests; use ``backend="process"`` for parallel work.

    Args:
        vnf: the VNF class (or a zero-argument factory); one instance is made per queue.
        queues: number of receive queues / worker threads.
        config: keyword arguments passed to every instance's ``setup``.
        classifier: a MultiQueueClassifier with ``queues`` queues (default: RSS with the Microsoft key).
        shared: the shared-state registry handed to every worker as ``ctx.shared``
            (default: a new :class:`vnfkit.state.SharedState`); ``ctx.state`` is worker q's
            recording context ``shared.context(q, logged)``.
        control: the :class:`ControlState` shared by every worker (``ctx.control``).
        depth: batches that may wait per queue (bounded, so a slow worker applies back-pressure).
        parse: parse every input batch before classifying it (set False if batches arrive parsed).
        logged: whether the workers' shared-state contexts log determinants.
        assign_ids: rewrite ``packet_id`` at arrival with runner-wide consecutive ids (the process
            backend's default); off by default here, so callers that tag packets by id keep theirs.

    Guarantees: each queue's sub-batches are processed by one thread in arrival order and handed to
    ``on_output`` in that order; an exception raised by a VNF stops the run and is re-raised by
    :meth:`run` (as :class:`WorkerError` from the original); ``close()`` stops every thread.
    Latency is measured per packet from the input batch's arrival at :meth:`run` (before parsing and
    classification) to the release of its sub-batch by the calling thread, into each queue's
    HdrHistogram (nanoseconds). With ``assign_ids``, ``packet_id`` is rewritten at arrival with
    runner-wide consecutive ids that continue across batches and calls to :meth:`run`.
    """

    backend = "thread"

    def __init__(
        self,
        vnf: type[VNF] | Callable[[], VNF],
        *,
        backend: str = "thread",
        queues: int = 1,
        config: dict[str, Any] | None = None,
        classifier: Any = None,
        shared: Any = None,
        control: ControlState | None = None,
        depth: int = 4,
        parse: bool = True,
        logged: bool = True,
        assign_ids: bool = False,
    ) -> None:
        if not isinstance(queues, int) or isinstance(queues, bool) or queues < 1:
            raise ValueError(f"queues must be a positive int, got {queues!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        from ..classify import MultiQueueClassifier

        self.classifier = classifier if classifier is not None else MultiQueueClassifier(queues)
        if self.classifier.num_queues != queues:
            raise ValueError(f"classifier has {self.classifier.num_queues} queues, runner has {queues}")
        if shared is None:
            from ..state import SharedState

            shared = SharedState()
        self.shared = shared
        self.control = control if control is not None else ControlState()
        self.num_queues = queues
        self.parse = parse
        self.assign_ids = assign_ids
        self._next_id = 0
        self._closed = False
        self._workers: list[_Worker] = []
        for q in range(queues):
            ctx = Context(q, queues, shared=shared, classifier=self.classifier, control=self.control,
                          logged=logged)
            inst = vnf()
            inst.setup(ctx, **(config or {}))
            self._workers.append(_Worker(inst, ctx, depth))

    @property
    def vnfs(self) -> list[VNF]:
        return [w.vnf for w in self._workers]

    @property
    def contexts(self) -> list[Context]:
        return [w.ctx for w in self._workers]

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._workers)

    def _put(self, w: _Worker, item: Any) -> None:
        # Bounded put that cannot deadlock on a worker that died: poll its failure flag.
        while True:
            if w.failed.is_set():
                return  # its exception is waiting in the outbox
            try:
                w.inbox.put(item, timeout=0.05)
                return
            except _queue.Full:
                continue

    def run(
        self,
        batches: Iterable[_core.PacketBatch],
        *,
        on_output: Callable[[int, _core.PacketBatch], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RunResult:
        """Classify every batch, process each queue's share on its worker, release outputs in order.

        `on_output(queue, batch)` receives each processed sub-batch (all its packets, with their
        decisions in ``port``/``drop``) in arrival order per queue. `progress(packets)` is called
        after each input batch with the number of packets it held. May be called several times (the
        VNF instances and their state persist; the returned stats cover this call only, except the
        VNF's own counters, which are cumulative); not after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("Runner is closed")
        for w in self._workers:
            w.stats = QueueStats(w.ctx.queue)  # per-run stats (workers are idle between runs)
            if not w.is_alive():
                w.start()
        expected = [0] * self.num_queues
        released = [0] * self.num_queues
        t_start = time.perf_counter()
        cpu_start = time.process_time()
        next_id = self._next_id

        def drain(q: int, block: bool) -> None:
            w = self._workers[q]
            while released[q] < expected[q]:
                try:
                    seq, out, t_in, t_out = w.outbox.get(block=block)
                except _queue.Empty:
                    return
                if isinstance(out, BaseException):
                    raise WorkerError(f"VNF {type(w.vnf).__name__} failed on queue {q}: {out!r}", queue=q) from out
                if seq != released[q]:
                    raise RuntimeError(f"queue {q}: output {seq} released out of order (expected {released[q]})")
                released[q] += 1
                st = w.stats
                n = len(out)
                st.packets += n
                st.batches += 1
                fwd = int(np.count_nonzero(out.port))
                st.forwarded += fwd
                st.dropped += n - fwd
                if fwd != n:
                    st.add_drops(out)
                if n:  # arrival at run() -> release here (not the worker's finish time)
                    st.latency.record(time.perf_counter_ns() - t_in, count=n)
                if on_output is not None:
                    on_output(q, out)

        try:
            for batch in batches:
                t_in = time.perf_counter_ns()
                n_in = len(batch)
                if self.assign_ids:  # runner-wide ids, continuing across batches and runs
                    batch.packet_id[:] = np.arange(next_id, next_id + n_in, dtype=np.uint64)
                    next_id += n_in
                    self._next_id = next_id
                if self.parse:
                    batch.parse()
                parts = self.classifier.classify(batch)
                for q, idx in enumerate(parts):
                    if len(idx) == 0:
                        continue
                    sub = batch if len(idx) == len(batch) else batch.select(idx)
                    self._put(self._workers[q], (expected[q], sub, t_in))
                    expected[q] += 1
                for q in range(self.num_queues):
                    drain(q, block=False)
                if progress is not None:
                    progress(len(batch))
            for q in range(self.num_queues):
                drain(q, block=True)
        except BaseException:
            self.close()
            raise
        wall = time.perf_counter() - t_start
        merged = HdrHistogram()
        for w in self._workers:
            merged.merge(w.stats.latency)
        vnf_stats: dict[str, int] = {}
        for w in self._workers:
            for k, v in w.vnf.stats().items():
                vnf_stats[k] = vnf_stats.get(k, 0) + int(v)
        return RunResult([w.stats for w in self._workers], vnf_stats, wall, merged, time.process_time() - cpu_start)

    def close(self) -> None:
        """Stop the worker threads and wait for them (idempotent)."""
        self._closed = True
        for w in self._workers:
            if w.is_alive():
                self._put(w, _STOP)
        for w in self._workers:
            if w.is_alive():
                w.join(timeout=10)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
