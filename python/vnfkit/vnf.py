"""The VNF base class and the multi-queue runner.

A VNF is a Python class whose ``process(batch, ctx)`` decides, for a whole batch at once, each
packet's output port (``batch.port``; 0 = drop, with ``batch.drop`` saying why) and rewrites headers
in place, by calling native batch operations. The :class:`Runner` plays a multi-queue NIC: the
:class:`~vnfkit.classify.MultiQueueClassifier` spreads every incoming batch over the receive queues by
RSS, one worker thread per queue runs its own instance of the VNF on its share (native calls release
the GIL, so workers run in parallel), and each queue's outputs are released in arrival order.

Per-flow state lives in each worker's own tables (RSS keeps a flow on one queue); state shared by
all workers goes through ``ctx.shared`` so that it is lock-free and can be logged for replay.
"""

from __future__ import annotations

import queue as _queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from .hdr import HdrHistogram

__all__ = ["VNF", "Context", "ControlState", "QueueStats", "RunResult", "Runner", "WorkerError", "iter_batches"]


class ControlState:
    """Control state: named, immutable objects (rule sets) published by one writer, read by workers.

    A writer replaces a whole object with :meth:`publish`; a worker reads it with :meth:`get` once
    per batch and uses that reference for the whole batch. Publishing is a single reference store
    into a dict (atomic under the GIL: a reader sees the old object or the new one, never a mix), so
    as long as the published objects are never mutated, every batch sees exactly one version of the
    rules. ``version(name)`` counts publications (handy for tests and stats).
    """

    def __init__(self) -> None:
        self._objs: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()  # serialises writers only; readers never take it

    def publish(self, name: str, obj: Any) -> int:
        """Replace `name` by `obj` (treat it as immutable from now on); returns the new version."""
        with self._lock:
            v = self._versions.get(name, 0) + 1
            self._objs[name] = obj  # one reference store: the atomic switch
            self._versions[name] = v
            return v

    def setdefault(self, name: str, obj: Any) -> Any:
        """Publish `obj` unless `name` exists; return the current object."""
        with self._lock:
            if name not in self._objs:
                self._objs[name] = obj
                self._versions[name] = 1
            return self._objs[name]

    def get(self, name: str) -> Any:
        """The current object published under `name` (KeyError if none)."""
        return self._objs[name]

    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def __contains__(self, name: object) -> bool:
        return name in self._objs


_DECLARED: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, tuple[Any, ...]]]] = weakref.WeakKeyDictionary()


def declare_shared(shared: Any, name: str, make: Callable[[], Any], signature: tuple[Any, ...]) -> Any:
    """The shared variable `name` of `shared`, created with `make()` by the first caller.

    Every worker's ``setup`` asks for the same variables: the first declares them, the others get
    the same objects. `signature` (kind and parameters) must match, otherwise two workers would
    disagree about the variable (ValueError)."""
    if shared is None:
        raise ValueError("ctx.shared: this VNF needs a vnfkit.state.SharedState (the Runner provides one)")
    table = _DECLARED.setdefault(shared, {})
    if name in table:
        obj, sig = table[name]
        if sig != signature:
            raise ValueError(f"shared variable {name!r} already declared with {sig}, not {signature}")
        return obj
    obj = make()
    table[name] = (obj, signature)
    return obj


class Context:
    """What a VNF instance sees of its worker: its queue, the shared state, and helpers.

    ``ctx.shared`` is the same object for every worker of a runner; everything else is per queue.
    """

    def __init__(self, queue: int, num_queues: int, shared: Any = None, classifier: Any = None,
                 control: ControlState | None = None, *, logged: bool = True) -> None:
        self.queue = queue
        self.num_queues = num_queues
        self.shared = shared
        self.classifier = classifier
        #: control state (rule sets) shared by every worker; one writer, many readers
        self.control = control if control is not None else ControlState()
        #: this worker's recording context of ``shared`` (``shared.context(queue)``): every access
        #: to shared aggregate state goes through it so that it is logged as a determinant
        self.state: Any = shared.context(queue, logged) if shared is not None else None
        self.tables: dict[str, Any] = {}

    def _shared(self, kind: str, name: str, kwargs: dict[str, Any]) -> Any:
        sh = self.shared
        return declare_shared(sh, name, lambda: getattr(sh, kind)(name, **kwargs),
                              (kind, tuple(sorted(kwargs.items()))))

    def counters(self, name: str, **kwargs: Any) -> Any:
        """The shared Counters `name` (``SharedState.counters`` arguments), declared once for all workers."""
        return self._shared("counters", name, kwargs)

    def token_buckets(self, name: str, **kwargs: Any) -> Any:
        """The shared TokenBuckets `name`, declared once for all workers."""
        return self._shared("token_buckets", name, kwargs)

    def port_pool(self, name: str, **kwargs: Any) -> Any:
        """The shared PortPool `name`, declared once for all workers."""
        return self._shared("port_pool", name, kwargs)

    def registers(self, name: str, **kwargs: Any) -> Any:
        """The shared Registers `name`, declared once for all workers."""
        return self._shared("registers", name, kwargs)

    def flow_table(self, name: str, **kwargs: Any) -> Any:
        """This worker's FlowTable called `name` (created on first use with `kwargs`)."""
        from .tables import FlowTable  # imported late: tables are optional for simple VNFs

        if name not in self.tables:
            self.tables[name] = FlowTable(**kwargs)
        return self.tables[name]


class VNF:
    """Base class of every vnfkit VNF. Subclasses override :meth:`setup` and :meth:`process`."""

    #: short name used by the CLI and in stats
    name = "vnf"

    def setup(self, ctx: Context, **config: Any) -> None:
        """Create tables and shared state; `config` comes from the user (CLI --config or kwargs)."""
        if config:
            raise TypeError(f"{type(self).__name__} takes no configuration, got {sorted(config)}")

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        """Decide every packet of `batch` (write batch.port, batch.drop; rewrite headers)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """VNF-specific counters (e.g. translations made); merged across queues by the runner."""
        return {}

    # ---- checkpoints (rollback recovery)
    def snapshot(self) -> dict[str, Any]:
        """This instance's Python-side state for a checkpoint (default: none).

        The checkpointer (:mod:`vnfkit.recovery.checkpoint`) calls it at a batch boundary, with no
        batch in flight, together with an image of every table made with ``ctx.flow_table`` and of
        the shared state. Override it in any VNF that keeps state outside those -- per-worker
        counters, export lists, caches, clocks, Python-side per-flow arrays -- and return:

        * everything :meth:`restore` needs so that the next ``process()`` behaves exactly as if the
          instance had never stopped (a counter that is not in the snapshot goes backwards after a
          recovery, which the recovery oracle reports);
        * *copies*, never views of live arrays (the VNF keeps running after the snapshot), built
          from plain data: ints, floats, str, bytes, numpy arrays, and lists/tuples/dicts of them
          (it is pickled into stable storage);
        * nothing about the FlowTables of ``ctx.tables`` or the SharedState: those are imaged by
          the checkpointer itself (and restored in place, so views of them stay valid).

        Every middlebox of :mod:`vnfkit.nfs` follows this contract; a new VNF with extra state
        must too (a stateless default would silently lose it)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Roll this instance back to `state` (what :meth:`snapshot` returned on a twin instance:
        the same class and configuration, after ``setup``). Restore *in place* -- assign into the
        existing arrays or replace attributes that no other object caches -- so that nothing keeps
        pointing at the state of before. The default accepts only the default's empty snapshot."""
        if state:
            raise ValueError(f"{type(self).__name__}.restore: this VNF keeps no Python-side state, "
                             f"got keys {sorted(state)} (override snapshot()/restore())")


@dataclass
class QueueStats:
    """Per-queue counters kept by the runner (updated by the caller's thread at release)."""

    queue: int
    packets: int = 0
    forwarded: int = 0
    dropped: int = 0
    batches: int = 0
    busy_ns: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    latency: HdrHistogram = field(default_factory=HdrHistogram)

    def add_drops(self, batch: _core.PacketBatch) -> None:
        """Count the dropped packets (port 0) of `batch` by DropReason name ("unspecified" if unset)."""
        dropped = batch.port == 0
        if not dropped.any():
            return
        codes = np.bincount(batch.drop[dropped], minlength=1)
        for code in np.nonzero(codes)[0]:
            name = _core.drop_reason_name(int(code)) or "unspecified"
            self.drops[name] = self.drops.get(name, 0) + int(codes[code])

    def summary(self) -> dict[str, Any]:
        """Plain-dict view (latency percentiles in microseconds)."""
        lat = self.latency
        return {
            "queue": self.queue, "packets": self.packets, "forwarded": self.forwarded,
            "dropped": self.dropped, "batches": self.batches, "busy_s": self.busy_ns / 1e9,
            "drops": dict(sorted(self.drops.items())),
            "p50_us": lat.percentile(50) / 1e3 if lat.total else 0.0,
            "p99_us": lat.percentile(99) / 1e3 if lat.total else 0.0,
        }


@dataclass
class RunResult:
    """Everything a run produced: per-queue stats, merged latency, VNF counters, wall time."""

    queues: list[QueueStats]
    vnf_stats: dict[str, int]
    wall_s: float
    latency: HdrHistogram

    @property
    def packets(self) -> int:
        return sum(q.packets for q in self.queues)

    @property
    def forwarded(self) -> int:
        return sum(q.forwarded for q in self.queues)

    @property
    def dropped(self) -> int:
        return sum(q.dropped for q in self.queues)

    @property
    def drops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for q in self.queues:
            for k, v in q.drops.items():
                out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))

    @property
    def mpps(self) -> float:
        return self.packets / self.wall_s / 1e6 if self.wall_s > 0 else 0.0

    @property
    def p50_us(self) -> float:
        """Median packet latency (arrival at the runner -> release), microseconds."""
        return self.latency.percentile(50) / 1e3 if self.latency.total else 0.0

    @property
    def p99_us(self) -> float:
        return self.latency.percentile(99) / 1e3 if self.latency.total else 0.0

    @staticmethod
    def combine(results: list[RunResult]) -> RunResult:
        """One result for several consecutive runs of one runner (counts, drops and latency added
        per queue, wall times summed; the VNF counters, cumulative already, from the last run)."""
        if not results:
            raise ValueError("results: need at least one RunResult")
        queues = []
        for q in range(len(results[0].queues)):
            acc = QueueStats(results[0].queues[q].queue)
            for r in results:
                s = r.queues[q]
                acc.packets += s.packets
                acc.forwarded += s.forwarded
                acc.dropped += s.dropped
                acc.batches += s.batches
                acc.busy_ns += s.busy_ns
                for k, v in s.drops.items():
                    acc.drops[k] = acc.drops.get(k, 0) + v
                acc.latency.merge(s.latency)
            queues.append(acc)
        merged = HdrHistogram()
        for qs in queues:
            merged.merge(qs.latency)
        return RunResult(queues, dict(results[-1].vnf_stats), sum(r.wall_s for r in results), merged)

    def summary(self) -> dict[str, Any]:
        """Totals, drops by reason, Mpps, p50/p99 latency and the VNF's counters, as a dict."""
        return {
            "packets": self.packets, "forwarded": self.forwarded, "dropped": self.dropped,
            "drops": self.drops, "wall_s": self.wall_s, "mpps": self.mpps,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "vnf": dict(self.vnf_stats),
            "queues": [q.summary() for q in self.queues],
        }


_STOP = object()


class WorkerError(RuntimeError):
    """A VNF raised inside a worker thread; ``__cause__`` is the original exception."""


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


class Runner:
    """Runs one VNF over a multi-queue classifier with one worker thread per queue.

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

    Guarantees: each queue's sub-batches are processed by one thread in arrival order and handed to
    ``on_output`` in that order; an exception raised by a VNF stops the run and is re-raised by
    :meth:`run` (as :class:`WorkerError` from the original); ``close()`` stops every thread.
    Latency is measured per packet from the input batch's arrival at :meth:`run` (before parsing and
    classification) to the release of its sub-batch -- the moment its worker finished it, which in a
    per-queue FIFO is when it may leave -- into each queue's HdrHistogram (nanoseconds).
    """

    def __init__(
        self,
        vnf: type[VNF] | Callable[[], VNF],
        *,
        queues: int = 1,
        config: dict[str, Any] | None = None,
        classifier: Any = None,
        shared: Any = None,
        control: ControlState | None = None,
        depth: int = 4,
        parse: bool = True,
        logged: bool = True,
    ) -> None:
        if not isinstance(queues, int) or isinstance(queues, bool) or queues < 1:
            raise ValueError(f"queues must be a positive int, got {queues!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        from .classify import MultiQueueClassifier

        self.classifier = classifier if classifier is not None else MultiQueueClassifier(queues)
        if self.classifier.num_queues != queues:
            raise ValueError(f"classifier has {self.classifier.num_queues} queues, runner has {queues}")
        if shared is None:
            from .state import SharedState

            shared = SharedState()
        self.shared = shared
        self.control = control if control is not None else ControlState()
        self.num_queues = queues
        self.parse = parse
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

        def drain(q: int, block: bool) -> None:
            w = self._workers[q]
            while released[q] < expected[q]:
                try:
                    seq, out, t_in, t_out = w.outbox.get(block=block)
                except _queue.Empty:
                    return
                if isinstance(out, BaseException):
                    raise WorkerError(f"VNF {type(w.vnf).__name__} failed on queue {q}: {out!r}") from out
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
                if n:
                    st.latency.record(t_out - t_in, count=n)
                if on_output is not None:
                    on_output(q, out)

        try:
            for batch in batches:
                t_in = time.perf_counter_ns()
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
        return RunResult([w.stats for w in self._workers], vnf_stats, wall, merged)

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


def iter_batches(batch: _core.PacketBatch, size: int) -> Iterator[_core.PacketBatch]:
    """Slices of `size` packets of one big batch (each a copy made by ``select``)."""
    if size < 1:
        raise ValueError("size: must be >= 1")
    n = len(batch)
    for start in range(0, n, size):
        yield batch.select(np.arange(start, min(start + size, n), dtype=np.uint32))
