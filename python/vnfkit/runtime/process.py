"""The process backend of the runner: one worker process per queue over shared-memory rings.

The calling process is the dispatcher (the "NIC", natively: :class:`~vnfkit._core.Dispatcher`, one
call per input batch with the GIL released): it gives every packet a runner-wide id, parses,
classifies by RSS and appends each queue's packets into the open slab of that queue's
:class:`~vnfkit._core.SlabRing` (packet bytes and columns written contiguously into shared
memory). A queue's slab is handed to its worker when it holds ``batch_size`` packets or when its
oldest packet has waited ``flush_us`` microseconds and the worker has finished what it was given
(a busy worker would not start it sooner; meanwhile the slab keeps filling). Each worker process (own interpreter, own GIL,
own VNF instance and per-flow tables) processes the slab in place as a PacketBatch over the shared
memory and hands it back; the dispatcher releases each queue's outputs in order and times every
packet from its arrival at the dispatcher to that release.

Faults: a worker that raises, segfaults or is killed is reported as :class:`WorkerError` naming its
queue and exit signal (the dispatcher looks at its workers at least every ``CHECK_S`` while it runs
or waits); ``close()``, an exception or Ctrl-C stops every worker, and no shared-memory file
outlives the workers' start (see ``_segments``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _core
from ..hdr import HdrHistogram
from ..vnf import VNF, ControlState
from . import _shared
from ._segments import Segment, sweep_stale
from ._worker import WorkerSpec, main
from .runner import Runner, WorkerError
from .stats import QueueStats, RunResult

__all__ = ["ProcessRunner"]

CHECK_S = 0.01  # how often the dispatcher looks at its workers' liveness
START_TIMEOUT_S = 120.0


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_spin_us(queues: int) -> float:
    """The default poll before a futex sleep: 200 us while the dispatcher and every worker have a
    core each, else 0 (a poller would take the core of the process it waits for)."""
    return 200.0 if queues + 1 <= usable_cores() else 0.0


def _cpu_set(name: str, cpus: Any, allowed: set[int]) -> frozenset[int]:
    """`cpus` (an iterable of CPU numbers) as a set, each one this process may run on."""
    if isinstance(cpus, (str, bytes)) or not hasattr(cpus, "__iter__"):
        raise TypeError(f"{name}: expected an iterable of CPU numbers, got {cpus!r}")
    out = set()
    for c in cpus:
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"{name}: CPU numbers are ints, got {c!r}")
        if c not in allowed:
            raise ValueError(f"{name}: CPU {c} is not one this process may run on (allowed: {sorted(allowed)})")
        out.add(c)
    if not out:
        raise ValueError(f"{name}: needs at least one CPU")
    return frozenset(out)


def _placement(queues: int, worker_cpus: Any, dispatcher_cpus: Any) -> tuple[list[frozenset[int] | None], frozenset[int] | None]:
    """Validated CPU sets: one per worker (None: the scheduler's choice), and the dispatcher's."""
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        allowed = set(range(os.cpu_count() or 1))
    per_worker: list[frozenset[int] | None] = [None] * queues
    if worker_cpus is not None:
        items = list(worker_cpus) if hasattr(worker_cpus, "__iter__") and not isinstance(worker_cpus, (str, bytes)) \
            else worker_cpus
        if isinstance(items, list) and items and all(hasattr(x, "__iter__") and not isinstance(x, (str, bytes))
                                                     for x in items):
            if len(items) != queues:
                raise ValueError(f"worker_cpus: {len(items)} CPU sets for {queues} workers")
            per_worker = [_cpu_set(f"worker_cpus[{q}]", x, allowed) for q, x in enumerate(items)]
        else:
            one = _cpu_set("worker_cpus", items, allowed)
            per_worker = [one] * queues
    disp = _cpu_set("dispatcher_cpus", dispatcher_cpus, allowed) if dispatcher_cpus is not None else None
    return per_worker, disp


def _check_portable(what: str, obj: Any) -> None:
    try:
        pickle.loads(pickle.dumps(obj))  # both ways: some objects pickle but refuse to unpickle
    except Exception as exc:
        raise TypeError(
            f"{what}: cannot cross a process boundary ({type(exc).__name__}: {exc}); the process backend "
            "needs a module-level VNF class or factory and picklable config (no lambdas, local classes, "
            "open files or native objects), or use backend='thread'") from None


def _classifier_spec(cl: Any) -> dict[str, Any]:
    return {"num_queues": cl.num_queues, "key": cl.key, "symmetric": cl.symmetric, "use_ports": cl.use_ports,
            "reta_size": len(cl.reta), "reta": [int(q) for q in cl.reta.table]}


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _cleanup(state: dict[str, Any]) -> None:
    """Stop every worker (stop flag, then SIGKILL after a grace period), free every segment."""
    for ring in state["rings"]:
        ring.request_stop()
    deadline = time.monotonic() + 2.0
    for p in state["procs"]:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(timeout=5.0)
    for c in state["conns"]:
        c.close()
    watch = state.pop("death_watch", None)
    if watch is not None:
        watch.close()  # every worker is gone: each thread has seen its line let go or dead
    state.pop("lifelines", None)
    state.pop("dispatcher", None)  # it holds the rings
    if state.get("affinity") is not None:
        tid, mask = state["affinity"]
        state["affinity"] = None
        try:
            os.sched_setaffinity(tid, mask)
        except OSError:  # the dispatcher's thread is gone
            pass
    state["rings"].clear()
    for seg in state["segments"]:
        seg.close()
    _shared.release_shared(state["shared"])
    state["procs"].clear()
    state["conns"].clear()
    state["segments"].clear()


class ProcessRunner(Runner):
    """The process backend: one worker process per queue (see the module docstring).

    Args:
        vnf: a module-level VNF class (or picklable zero-argument factory); each worker makes one.
        queues: receive queues = worker processes.
        config: keyword arguments for every instance's ``setup`` (must be picklable).
        classifier: a MultiQueueClassifier with ``queues`` queues (default: RSS, Microsoft key);
            each worker gets an equal copy as ``ctx.classifier``.
        control: the :class:`ControlState` of the dispatcher side: objects published on it (before or
            during a run) reach every worker, which adopts them between two batches, never inside one.
        depth: slabs in flight per queue (rounded up to a power of two >= 2): back-pressure bound.
        parse: parse every input batch before classifying it.
        logged: whether the workers' shared-state contexts log determinants.
        batch_size: B, packets per slab: a queue is flushed to its worker when it holds B packets.
        flush_us: T, a queue is flushed when its oldest packet has waited T microseconds.
        slab_bytes: bytes per slab (default: room for B packets of 1 536 bytes plus columns).
        start_method: multiprocessing start method ("spawn" or "forkserver").
        assign_ids: give every packet a runner-wide, monotonic ``packet_id`` at arrival (continuing
            across runs); False keeps the ids the input carries.
        spin_us: how long a waiting side (an idle worker, the dispatcher waiting for a free slab)
            polls before it sleeps on the ring's futex. Default: 200 us while every process
            (dispatcher + workers) has a core of its own, else 0 -- with more busy processes than
            cores a polling process takes the core that the one it waits for needs.
        worker_cpus: CPUs the workers run on: one iterable of CPU numbers for every worker (e.g.
            ``[1]``), or one per queue (``[[0], [1]]``); default: wherever the scheduler puts them.
        dispatcher_cpus: CPUs the calling thread (the dispatcher) runs on while the runner is open;
            its own affinity is put back by ``close()``. Giving the dispatcher a core of its own pays
            where it is the bottleneck (the streaming fault-tolerant master), not where the workers
            are. With either given, the default ``spin_us`` is 200 only if no two of the dispatcher
            and the workers share a CPU, else 0.
        hold_while_busy: a partial slab past T waits while its worker has not finished the slabs it
            was given (its packets would not start sooner), so batches grow under load; False
            commits every partial slab at T.
        keep_log: with ``logged``, workers leave their determinant logs in the shared segment (the
            parent reads them through :attr:`shared_state`; a call draining them is the caller's job)
            instead of discarding each batch's records.

    ``ctx.shared`` is one SharedState in a shared-memory segment that every worker maps (made and
    unlinked through ``runtime._shared``), so shared variables are shared across the processes. ``vnfs`` / ``contexts`` do not exist here: each VNF lives in its worker.
    """

    backend = "process"

    def __init__(self, vnf: type[VNF] | Callable[[], VNF], *, backend: str = "process", queues: int = 1,
                 config: dict[str, Any] | None = None, classifier: Any = None, shared: Any = None,
                 control: ControlState | None = None, depth: int = 8, parse: bool = True, logged: bool = True,
                 batch_size: int = 256, flush_us: float = 50.0, slab_bytes: int | None = None,
                 start_method: str = "spawn", assign_ids: bool = True, keep_log: bool = False,
                 spin_us: float | None = None, hold_while_busy: bool = True, worker_cpus: Any = None,
                 dispatcher_cpus: Any = None) -> None:
        for name, v in (("queues", queues), ("depth", depth), ("batch_size", batch_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if batch_size > (1 << 20):
            raise ValueError(f"batch_size must be <= 1048576, got {batch_size}")
        if isinstance(flush_us, bool) or not isinstance(flush_us, (int, float)) or not 0 <= flush_us <= 1e7:
            raise ValueError(f"flush_us must be a number in [0, 1e7], got {flush_us!r}")
        if spin_us is not None and (isinstance(spin_us, bool) or not isinstance(spin_us, (int, float))
                                    or not 0 <= spin_us <= 1e7):
            raise ValueError(f"spin_us must be None or a number in [0, 1e7], got {spin_us!r}")
        if shared is not None:
            raise ValueError("shared: the process backend creates its shared state itself (runtime._shared); "
                             "pass shared= only with backend='thread'")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        config = dict(config or {})
        _check_portable("vnf", vnf)
        _check_portable("config", config)
        from ..classify import MultiQueueClassifier

        self.classifier = classifier if classifier is not None else MultiQueueClassifier(queues)
        if self.classifier.num_queues != queues:
            raise ValueError(f"classifier has {self.classifier.num_queues} queues, runner has {queues}")
        self.num_queues = queues
        self.parse = parse
        self.assign_ids = assign_ids
        self.keep_log = bool(keep_log)
        self._linktype = 1  # of the current input (pcap LINKTYPE_ETHERNET until a batch says otherwise)
        self.batch_size = batch_size
        self.flush_ns = int(flush_us * 1000)
        self._worker_cpus, self._dispatcher_cpus = _placement(queues, worker_cpus, dispatcher_cpus)
        if spin_us is not None:
            self.spin_us = float(spin_us)
        elif worker_cpus is None and dispatcher_cpus is None:
            self.spin_us = default_spin_us(queues)
        else:  # a poll pays only while every polling party has its CPU to itself
            sets = [c for c in (*self._worker_cpus, self._dispatcher_cpus) if c is not None]
            disjoint = len(sets) == queues + 1 and sum(len(c) for c in sets) == len(frozenset().union(*sets))
            self.spin_us = default_spin_us(queues) if disjoint else 0.0
        self.hold_while_busy = bool(hold_while_busy)
        self.control = control if control is not None else ControlState()
        self.vnf_name = getattr(vnf, "__name__", type(vnf).__name__)
        slots = 2
        while slots < depth:
            slots *= 2
        if slab_bytes is None:
            slab_bytes = (batch_size * (1536 + 128) + 65536 + 4095) // 4096 * 4096
        self._closed = False
        self._cpu_seen = [0] * queues
        sweep_stale()  # what killed runners of this uid left in /dev/shm and the temporary directory
        self._state: dict[str, Any] = {"procs": [], "conns": [], "rings": [], "segments": [],
                                       "shared": _shared.make_shared(queues), "affinity": None}
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        try:
            self._start(vnf, config, logged, slots, slab_bytes, start_method)
        except BaseException:
            self.close()
            raise
        self.control.subscribe(self._on_publish)

    # ---- start / stop
    def _start(self, vnf: Any, config: dict[str, Any], logged: bool, slots: int, slab_bytes: int,
               start_method: str) -> None:
        st = self._state
        ctx = mp.get_context(start_method)
        size = _core.SlabRing.required_bytes(slots, slab_bytes)
        cspec = _classifier_spec(self.classifier)
        published = {n: self.control.get(n) for n in self.control.names()}
        _check_portable("control", published)
        life = Segment("life", _core.LifeLines.required_bytes(self.num_queues))
        st["segments"].append(life)
        st["lifelines"] = _core.LifeLines(life.map, create=True, lines=self.num_queues)
        for q in range(self.num_queues):
            seg = Segment(f"q{q}", size, populate=True)
            st["segments"].append(seg)
            st["rings"].append(_core.SlabRing(seg.map, create=True, slots=slots, slab_bytes=slab_bytes,
                                              max_packets=self.batch_size))
        for q in range(self.num_queues):
            parent_end, child_end = ctx.Pipe()
            spec = WorkerSpec(q, self.num_queues, st["segments"][q + 1].path, self.batch_size, vnf, config, cspec,
                              st["shared"], published, logged, os.getpid(), self.keep_log, self.spin_us * 1e-6,
                              life.path)
            p = ctx.Process(target=main, args=(spec, child_end), name=f"vnfkit-worker-{q}",  # type: ignore[attr-defined]
                            daemon=True)
            p.start()
            child_end.close()
            st["procs"].append(p)
            st["conns"].append(parent_end)
            cpus = self._worker_cpus[q]
            if cpus is not None:
                try:
                    os.sched_setaffinity(p.pid, cpus)
                except ProcessLookupError:  # died at once: the wait for "ready" below reports it
                    pass
        deadline = time.monotonic() + START_TIMEOUT_S
        for q in range(self.num_queues):
            msg = self._recv(q, deadline)
            if msg[0] != "ready":
                raise RuntimeError(f"worker {q}: unexpected message {msg[0]!r}")
            for name, obj in msg[1].items():
                self.control.setdefault(name, obj)
            self._cpu_seen[q] = msg[2]
        st["dispatcher"] = _core.Dispatcher(st["rings"], self.classifier, batch_size=self.batch_size,
                                            flush_us=self.flush_ns / 1000, parse=self.parse,
                                            assign_ids=self.assign_ids, spin_us=self.spin_us,
                                            hold_while_busy=self.hold_while_busy)
        for seg in st["segments"]:
            seg.unlink()  # every worker has it mapped: nothing left in /dev/shm from here on
        _shared.workers_attached(st["shared"])
        if self._dispatcher_cpus is not None:
            tid = threading.get_native_id()
            st["affinity"] = (tid, os.sched_getaffinity(tid))
            os.sched_setaffinity(tid, self._dispatcher_cpus)
        # one native thread per worker, waiting on its line (they inherit this thread's placement)
        st["death_watch"] = _core.DeathWatch(st["lifelines"])

    def _recv(self, q: int, deadline: float) -> Any:
        """The next message of worker q; raises WorkerError if it died or sent an error."""
        conn = self._state["conns"][q]
        proc = self._state["procs"][q]
        while True:
            if conn.poll(CHECK_S):
                try:
                    msg = conn.recv()
                except (EOFError, OSError):  # a killed worker's end: EOF, a reset, or a message cut off
                    proc.join(timeout=1.0)
                    self._raise_dead(q)
                if msg[0] == "error":
                    self._raise_error(q, msg)
                return msg
            if proc.exitcode is not None:
                self._raise_dead(q)
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {q}: no answer within {START_TIMEOUT_S} s")

    def _send(self, q: int, msg: Any) -> None:
        """Send worker q a message; raises WorkerError if it is dead (its end of the pipe is gone)."""
        try:
            self._state["conns"][q].send(msg)
        except (BrokenPipeError, ConnectionResetError):
            self._state["procs"][q].join(timeout=1.0)
            self._raise_dead(q)

    def _raise_error(self, q: int, msg: Any) -> None:
        _, where, exc, text, tb = msg
        if where == "setup" and isinstance(exc, (ValueError, TypeError)):
            raise exc  # a bad configuration: the same error as the thread backend gives
        err = WorkerError(f"VNF {self.vnf_name} failed on queue {q} in {where}(): {text}\n{tb}", queue=q, exitcode=1)
        if isinstance(exc, BaseException):
            raise err from exc
        raise err

    def _raise_dead(self, q: int) -> None:
        proc = self._state["procs"][q]
        conn = self._state["conns"][q]
        try:
            if conn.poll(0):
                msg = conn.recv()
                if msg[0] == "error":
                    self._raise_error(q, msg)
        except (EOFError, OSError):
            pass
        code = proc.exitcode
        if code is not None and code < 0:
            sig = _signal_name(code)
            raise WorkerError(f"worker of queue {q} (pid {proc.pid}, VNF {self.vnf_name}) killed by {sig}",
                              queue=q, signal=sig, exitcode=code)
        raise WorkerError(f"worker of queue {q} (pid {proc.pid}, VNF {self.vnf_name}) exited with code {code}",
                          queue=q, exitcode=code)

    def _check_workers(self) -> None:
        for q, p in enumerate(self._state["procs"]):
            if p.exitcode is not None:
                self._raise_dead(q)

    @property
    def shared_state(self) -> Any:
        """This process's mapping of the workers' SharedState (their shared variables and logs)."""
        return _shared.owned_state(self._state["shared"])

    def call_workers(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 30.0) -> list[Any]:
        """Run ``fn(vnf, ctx, *args)`` in every worker at its next batch boundary (call between
        runs, when no batch is in flight); their results by queue. `fn` must be picklable (a
        module-level function). A worker that dies or raises meanwhile is a WorkerError."""
        _check_portable("fn", fn)
        for q in range(self.num_queues):
            self._send(q, ("call", fn, args))
            ring = self._state["rings"][q]
            ring.user_word = ring.user_word + 1
            ring.notify_worker()
        deadline = time.monotonic() + timeout_s
        out = []
        for q in range(self.num_queues):
            msg = self._recv(q, deadline)
            while msg[0] != "reply":
                msg = self._recv(q, deadline)
            out.append(msg[1])
        return out

    @property
    def dispatcher(self) -> Any:
        """The native :class:`~vnfkit._core.Dispatcher`, for a caller that runs its own streaming
        loop (``dispatch`` / ``resume`` / ``take_outputs`` / ``drain``) instead of :meth:`run`, such
        as the streaming fault-tolerant master (:mod:`vnfkit.recovery.ft_runner`)."""
        if self._closed:
            raise RuntimeError("Runner is closed")
        return self._state["dispatcher"]

    def kill_workers(self) -> None:
        """SIGKILL every worker without waiting for it to be gone (fencing a failed master: nothing
        more of it may run; :meth:`close` reaps them)."""
        for p in self._state["procs"]:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def death_watch(self) -> Any:
        """The :class:`~vnfkit._core.DeathWatch` over the workers' lines (line = queue): a worker's
        death is stamped the moment the kernel starts its exit, milliseconds before its pidfd
        turns readable (which waits for its memory to be unmapped)."""
        if self._closed:
            raise RuntimeError("Runner is closed")
        return self._state["death_watch"]

    @property
    def lifelines(self) -> Any:
        """The workers' :class:`~vnfkit._core.LifeLines` (see :attr:`death_watch`)."""
        if self._closed:
            raise RuntimeError("Runner is closed")
        return self._state["lifelines"]

    @property
    def pids(self) -> list[int]:
        """The worker processes' pids, by queue."""
        return [p.pid for p in self._state["procs"]]

    def close(self) -> None:
        """Stop every worker and free every shared-memory segment (idempotent)."""
        self._closed = True
        self.control.unsubscribe(self._on_publish)
        self._finalizer()

    # ---- control state
    def _on_publish(self, name: str, obj: Any) -> None:
        if self._closed:
            return
        _check_portable(f"control state {name!r}", obj)
        for q, conn in enumerate(self._state["conns"]):
            conn.send(("publish", name, obj))
            ring = self._state["rings"][q]
            ring.user_word = ring.user_word + 1
            ring.notify_worker()

    def _collect(self, stats: list[QueueStats]) -> dict[str, int]:
        vnf_stats: dict[str, int] = {}
        for q in range(self.num_queues):
            self._send(q, ("stats",))
            ring = self._state["rings"][q]
            ring.user_word = ring.user_word + 1
            ring.notify_worker()
        deadline = time.monotonic() + 30.0
        for q in range(self.num_queues):
            msg = self._recv(q, deadline)
            while msg[0] != "stats":
                msg = self._recv(q, deadline)
            _, vs, busy, _batches, cpu = msg
            stats[q].busy_ns = busy
            stats[q].cpu_ns = cpu - self._cpu_seen[q]
            self._cpu_seen[q] = cpu
            for k, v in vs.items():
                vnf_stats[k] = vnf_stats.get(k, 0) + int(v)
        return vnf_stats

    # ---- the dispatcher (native: _core.Dispatcher does ids, parse, RSS, slabs, release and stats)
    @property
    def _next_id(self) -> int:
        return int(self._state["dispatcher"].next_id)

    def _deliver(self, on_output: Callable[[int, Any], None] | None) -> None:
        """Hand the outputs the dispatcher collected to `on_output`, in release order per queue."""
        if on_output is None:
            return
        for q, out in self._state["dispatcher"].take_outputs():
            out.linktype = self._linktype  # slabs carry no link type: the input's (one per run)
            on_output(q, out)

    def _step(self, on_output: Any) -> None:
        """Between two dispatcher calls that ran out of time: workers alive? outputs handed on."""
        self._check_workers()
        self._deliver(on_output)

    def _begin(self, on_output: Any) -> Any:
        if self._closed:
            raise RuntimeError("Runner is closed")
        d = self._state["dispatcher"]
        d.clear_counters()
        d.set_collect(on_output is not None)
        return d

    def _queue_stats(self) -> list[QueueStats]:
        d = self._state["dispatcher"]
        stats = []
        for q in range(self.num_queues):
            c = d.counters(q)
            st = QueueStats(q, packets=c["packets"], forwarded=c["forwarded"], dropped=c["packets"] - c["forwarded"],
                            batches=c["slabs"])
            for code in np.flatnonzero(c["drops"]):
                name = _core.drop_reason_name(int(code)) or "unspecified"
                st.drops[name] = st.drops.get(name, 0) + int(c["drops"][code])
            st.latency.add_counts(c["latency_counts"], total=c["latency_total"], overflow=c["latency_overflow"],
                                  min=c["latency_min"], max=c["latency_max"])
            stats.append(st)
        d.clear_counters()
        return stats

    def _finish(self, on_output: Any, t_start: float, cpu_start: float) -> RunResult:
        d = self._state["dispatcher"]
        while not d.drain(CHECK_S):
            self._step(on_output)
        self._deliver(on_output)
        wall = time.perf_counter() - t_start
        cpu = time.process_time() - cpu_start
        stats = self._queue_stats()
        vnf_stats = self._collect(stats)
        merged = HdrHistogram()
        for s in stats:
            merged.merge(s.latency)
        return RunResult(stats, vnf_stats, wall, merged, cpu)

    def run(self, batches: Iterable[Any], *, on_output: Callable[[int, Any], None] | None = None,
            progress: Callable[[int], None] | None = None) -> RunResult:
        """Dispatch every batch (closed loop: as fast as the workers take them); same contract as the
        thread backend's run(). `on_output(queue, batch)` gets an owned copy of every output batch.

        One native call per input batch (GIL released): runner-wide ids, parse, RSS, append into the
        queues' slabs, release of ready outputs (counted natively), flush on T."""
        d = self._begin(on_output)
        t_start = time.perf_counter()
        cpu_start = time.process_time()
        last_check = time.monotonic()
        try:
            for batch in batches:
                self._linktype = batch.linktype
                if not d.dispatch(batch, _core.now_ns(), CHECK_S):
                    self._step(on_output)
                    while not d.resume(CHECK_S):
                        self._step(on_output)
                    last_check = time.monotonic()
                self._deliver(on_output)
                if time.monotonic() - last_check > CHECK_S:
                    self._check_workers()
                    last_check = time.monotonic()
                if progress is not None:
                    progress(len(batch))
            return self._finish(on_output, t_start, cpu_start)
        except BaseException:
            self.close()
            raise

    def run_paced(self, trace: Any, rate_pps: float, *, on_output: Callable[[int, Any], None] | None = None,
                  chunk: int | None = None) -> RunResult:
        """Open loop: replay the packets of one in-memory batch at `rate_pps` (packet i arrives at
        start + i / rate, whether or not the runtime keeps up), so latency is measured at a given load.

        The trace is given ids, parsed and RSS-classified before the clock starts (a NIC does that
        in hardware); each packet's latency runs from its scheduled arrival to its release, so time
        the dispatcher falls behind counts. The schedule runs natively (GIL released), coming back
        to Python every ``CHECK_S`` to look at the workers. `chunk`: most packets taken per
        dispatcher iteration (default batch_size).
        """
        if isinstance(rate_pps, bool) or not isinstance(rate_pps, (int, float)) or not 0 < rate_pps <= 1e9:
            raise ValueError(f"rate_pps must be in (0, 1e9], got {rate_pps!r}")
        if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        d = self._begin(on_output)
        self._linktype = trace.linktype
        try:
            d.begin_paced(trace, 1000, 1e9 / rate_pps, chunk or self.batch_size)
            t_start = time.perf_counter()
            cpu_start = time.process_time()
            while not d.pace(CHECK_S):
                self._step(on_output)
            return self._finish(on_output, t_start, cpu_start)
        except BaseException:
            self.close()
            raise
