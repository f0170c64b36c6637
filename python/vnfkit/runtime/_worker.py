"""The body of one worker process of the process backend.

A worker maps its queue's ring, builds its own VNF instance (own interpreter, own GIL, own per-flow
tables), reports ready, then loops: wait for a slab (spin briefly, then sleep on the ring's futex),
wrap it as a PacketBatch over the shared memory (no copy), ``process()`` it in place, hand it back.
Between batches -- never inside one -- it applies control-state publications and answers stats
requests and calls (``("call", fn, args)``: ``fn(vnf, ctx, *args)`` run in the worker, its result
sent back; how the recovery harness takes a worker's snapshot) that the parent announces by bumping
the ring's user word. It ignores SIGINT (the parent
stops it), and dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

WAIT_S = 0.05  # longest sleep between looks at the stop flag and the parent


@dataclass
class WorkerSpec:
    queue: int
    num_queues: int
    path: str  # the ring's segment
    max_packets: int
    vnf: Any  # class or picklable factory
    config: dict[str, Any]
    classifier: dict[str, Any]
    shared: Any  # spec from _shared.make_shared
    control: dict[str, Any]  # control objects published before start
    logged: bool
    parent_pid: int
    keep_log: bool = False  # leave the determinant log in the shared segment for the parent to read
    spin_s: float = 200e-6  # how long an idle worker polls its ring before it sleeps on the futex
    life_path: str | None = None  # segment of the runner's LifeLines: the worker holds line `queue`


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def _picklable(obj: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(obj))  # both ways: some objects pickle but refuse to unpickle
    except Exception:
        return False
    return True


def _send_error(conn: Any, where: str, exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(exc))
    payload = exc if _picklable(exc) else None
    try:
        conn.send(("error", where, payload, repr(exc), tb))
    except (OSError, ValueError):  # pragma: no cover - parent gone
        pass


def main(spec: WorkerSpec, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    from .. import _core
    from ..classify import MultiQueueClassifier
    from ..vnf import Context, ControlState
    from ._segments import attach
    from ._shared import attach_shared

    # a worker's checkpoint images are megabytes each time: keep those pages for the next one
    _core.retain_heap()
    try:
        mem = attach(spec.path, populate=True)
        ring = _core.SlabRing(mem, create=False, max_packets=spec.max_packets)
        c = spec.classifier
        classifier = MultiQueueClassifier(c["num_queues"], key=c["key"], symmetric=c["symmetric"],
                                          reta_size=c["reta_size"], use_ports=c["use_ports"])
        classifier.reta.update(c["reta"])
        control = ControlState()
        for name, obj in spec.control.items():
            control.setdefault(name, obj)
        ctx = Context(spec.queue, spec.num_queues, shared=attach_shared(spec.shared, spec.queue),
                      classifier=classifier, control=control, logged=spec.logged)
        vnf = spec.vnf()
        vnf.setup(ctx, **spec.config)
        # control objects the VNF published in setup, for the parent's copy (only picklable ones)
        published = {n: control.get(n) for n in control.names() if _picklable(control.get(n))}
        # read before "ready": the parent may announce a request as soon as it hears it
        seen = ring.user_word
        # What setup built lives as long as the worker: out of the collector's sight, so a full
        # collection in the packet loop walks only what batches allocate (no millisecond pauses)
        gc.collect()
        gc.freeze()
        # the parent's watcher hears of this process's death from this line as the kernel begins the
        # exit, before the unmap that a pidfd waits for
        lines = None
        if spec.life_path is not None:
            lines = _core.LifeLines(attach(spec.life_path), create=False)
            lines.hold(spec.queue)
        # CPU time in ns (clock_gettime: os.times() only counts 10 ms ticks, too coarse for short runs)
        conn.send(("ready", published, time.process_time_ns()))
    except BaseException as exc:
        _send_error(conn, "setup", exc)
        os._exit(1)

    # The worker's determinant log (in the shared segment) is emptied after every batch; the recovery
    # harness, not the plain runner, is what keeps logs.
    log = ctx.state if spec.logged and ctx.state is not None and not spec.keep_log else None
    busy_ns = 0
    batches = 0
    spin_s = spec.spin_s
    while True:
        if ring.input_ready or ring.wait_input(WAIT_S, spin_s):
            batch = ring.input()
            t0 = time.perf_counter_ns()
            try:
                vnf.process(batch, ctx)
                ring.complete(batch)
                if log is not None:
                    log.drain_chunk()  # shipped to no storage: the plain runner keeps no log
            except BaseException as exc:
                _send_error(conn, "process", exc)
                os._exit(1)
            busy_ns += time.perf_counter_ns() - t0
            batches += 1
            del batch
        elif ring.stopped:
            break
        elif os.getppid() != spec.parent_pid:
            break
        word = ring.user_word
        if word != seen:  # a batch boundary: adopt control updates, answer requests
            seen = word
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "publish":
                    control.publish(msg[1], msg[2])
                elif msg[0] == "stats":
                    conn.send(("stats", dict(vnf.stats()), busy_ns, batches, time.process_time_ns()))
                    busy_ns = 0
                    batches = 0
                elif msg[0] == "call":
                    try:
                        result = msg[1](vnf, ctx, *msg[2])
                    except BaseException as exc:
                        _send_error(conn, "call", exc)
                        os._exit(1)
                    conn.send(("reply", result))
    conn.close()
    if lines is not None:
        lines.let_go(spec.queue)  # a clean exit: nothing to report
    os._exit(0)
