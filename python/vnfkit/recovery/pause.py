"""What a copy-on-write checkpoint costs the workers: many fork checkpoints, each image verified.

:func:`measure_fork_pauses` runs a VNF on a :class:`vnfkit.runtime.process.ProcessRunner`, loads
its tables with `load` batches, then alternates `batches_between` batches of `traffic` with one
fork checkpoint of every worker (:func:`.cow.worker_fork_image`), `checkpoints` times. Per
checkpoint it records, per worker, the wall time and the CPU time of the ``fork()`` (the worker's
pause: the rest of the image is written by the child while the worker goes on), and the round
trip the dispatcher saw (request to every worker's answer, which includes reaching the batch
boundary). Every `verify_every`-th checkpoint, and the last, is checked: right after the fork,
with no batch in between, every worker also images itself synchronously, and the forked image
must equal it byte for byte (tables) and value for value (VNF state), and the table images must
restore into fresh tables that image back identically.

With ``mode="delta"`` no fork is made: every worker writes what changed since its previous
checkpoint (:func:`.cow.worker_delta_image`; its first checkpoint writes base images), and the
dispatcher, as the checkpointer, applies it to its shadow images (:class:`.cow.DeltaImages`). The
recorded pause (``fork_s`` / ``fork_cpu_s``) is then the whole time the worker was stopped for the
checkpoint: its VNF state snapshot, the table deltas, pickling and writing the file. The
dispatcher's time to apply the files is ``apply_s``. Verification compares the shadow images with
the synchronous image of the same cut, as for forks.

:func:`measure_all_dirty` times one table's delta when every flow changed since the previous
checkpoint, against a whole snapshot of the same table, in a fresh process with the allocator as
a worker has it (:func:`vnfkit._core.retain_heap`) or as a plain process has it.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime._segments import owned_dir
from .cow import (DeltaImages, collect_image, worker_delta_image, worker_delta_reset, worker_fork_image,
                  worker_huge_pages, worker_memory, worker_reap)

__all__ = ["PauseReport", "measure_all_dirty", "measure_fork_pauses", "percentiles_ms"]


def percentiles_ms(xs: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max of `xs` (seconds) in milliseconds, and n."""
    if not len(xs):
        return {"n": 0}
    a = np.asarray(xs, dtype=np.float64) * 1e3
    out = {k: round(float(np.percentile(a, q)), 3) for k, q in (("p50", 50), ("p99", 99), ("p99.9", 99.9))}
    return out | {"max": round(float(a.max()), 3), "n": len(a)}


@dataclass
class PauseReport:
    """Per-checkpoint pauses (seconds; fork wall and CPU per worker, or in delta mode the worker's
    whole stop, dispatcher round trip, the checkpointer's apply time and the bytes each worker
    wrote), the flows each worker held, the checkpoints verified, memory per worker, and the load
    average."""

    fork_s: list[float] = field(default_factory=list)
    fork_cpu_s: list[float] = field(default_factory=list)
    roundtrip_s: list[float] = field(default_factory=list)
    image_wait_s: list[float] = field(default_factory=list)
    apply_s: list[float] = field(default_factory=list)
    image_bytes: list[int] = field(default_factory=list)
    mode: str = "fork"
    flows: list[int] = field(default_factory=list)
    verified: int = 0
    memory: list[dict[str, Any]] = field(default_factory=list)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "checkpoints": len(self.roundtrip_s), "flows_per_worker": self.flows, "verified": self.verified,
                "fork_ms": percentiles_ms(self.fork_s), "fork_cpu_ms": percentiles_ms(self.fork_cpu_s),
                "roundtrip_ms": percentiles_ms(self.roundtrip_s),
                "image_wait_ms": percentiles_ms(self.image_wait_s), "apply_ms": percentiles_ms(self.apply_s),
                "image_kib_p50": round(float(np.median(self.image_bytes)) / 1024, 1) if self.image_bytes else 0.0,
                "small_page_kib": [m["small_page_kib"] for m in self.memory],
                "loadavg": list(self.loadavg)}


def _table_sizes(vnf: Any, ctx: Any) -> int:
    return max((len(t) for t in ctx.tables.values()), default=0)


def _sync_image(vnf: Any, ctx: Any) -> bytes:
    return pickle.dumps(({n: t.snapshot() for n, t in ctx.tables.items()}, vnf.snapshot()), protocol=5)


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def _verify(images: list[tuple[dict[str, bytes], dict[str, Any]] | None], sync: list[bytes]) -> None:
    from ..tables import FlowTable

    for q, (img, blob) in enumerate(zip(images, sync)):
        if img is None:
            raise AssertionError(f"worker {q}: no forked image")
        tables, state = img
        want_tables, want_state = pickle.loads(blob)
        if tables != want_tables:
            raise AssertionError(f"worker {q}: forked table images differ from the live tables")
        if not _same_state(state, want_state):
            raise AssertionError(f"worker {q}: forked VNF state differs from the live state")
        for name, b in tables.items():
            if FlowTable.restore(b).snapshot() != b:
                raise AssertionError(f"worker {q}: table {name} does not restore to the same image")


def _delta_checkpoint(runner: Any, shadow: DeltaImages, prefix: str, rep: PauseReport, i: int, queues: int) -> None:
    t0 = time.perf_counter()
    done = runner.call_workers(worker_delta_image, prefix)
    rep.roundtrip_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q in range(queues):
        if not shadow.collect(q, f"{prefix}-{q}"):
            raise AssertionError(f"worker {q}: no delta image at checkpoint {i}")
    if i:  # the first checkpoint writes the base images (the one-time full copy)
        rep.apply_s.append(time.perf_counter() - t0)
        rep.fork_s.extend(d[2] for d in done)
        rep.fork_cpu_s.extend(d[3] for d in done)
        rep.image_bytes.extend(d[0] for d in done)


def measure_fork_pauses(vnf: type, config: dict[str, Any], load: Sequence[Any], traffic: Sequence[Any], *,
                        checkpoints: int, batches_between: int = 1, queues: int = 2, verify_every: int = 100,
                        huge_pages: bool = False, mode: str = "fork",
                        progress: Callable[[str], None] | None = None) -> PauseReport:
    """See the module docstring. `load` and `traffic` are PacketBatches (`traffic` is cycled);
    `huge_pages`: whether the workers move their memory to huge pages at the first fork; `mode`:
    ``"fork"`` (copy-on-write children) or ``"delta"`` (dirty tracking, no fork)."""
    from ..runtime.process import ProcessRunner

    for name, v in (("checkpoints", checkpoints), ("batches_between", batches_between), ("queues", queues),
                    ("verify_every", verify_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if not len(traffic):
        raise ValueError("traffic: need at least one batch")
    if mode not in ("fork", "delta"):
        raise ValueError(f"mode: expected 'fork' or 'delta', got {mode!r}")
    rep = PauseReport(mode=mode)
    shadow = DeltaImages()
    # delta files go to memory (tmpfs) where there is one: the worker's write is then a copy into
    # the page cache, never a wait for a disk (the checkpointer writes the images out itself)
    tmp = owned_dir("pause", tmpfs=mode == "delta")
    runner = ProcessRunner(vnf, queues=queues, config=config, parse=False, logged=True, keep_log=True,
                           assign_ids=False)
    shared = runner.shared_state

    def run(b: Any) -> None:
        b.parse()
        runner.run([b], on_output=lambda q, x: None)
        for q in range(queues):  # the dispatcher reads the logs (the recovery master ships them)
            shared.log_range(q)

    try:
        runner.call_workers(worker_huge_pages, huge_pages)
        for b in load:
            run(b)
        rep.flows = runner.call_workers(_table_sizes)
        if mode == "delta":
            runner.call_workers(worker_delta_reset)
        k = 0
        pending: str | None = None  # the prefix of the image the children are still writing
        for i in range(checkpoints):
            for _ in range(batches_between):  # the workers go on while the children write
                run(traffic[k % len(traffic)])
                k += 1
            if mode == "delta":
                _delta_checkpoint(runner, shadow, os.path.join(tmp.name, f"c{i}"), rep, i, queues)
                if i % verify_every == 0 or i == checkpoints - 1:
                    sync = runner.call_workers(_sync_image)  # the same cut: no batch since
                    _verify([shadow.image(q) for q in range(queues)], sync)
                    rep.verified += 1
                if progress is not None and (i + 1) % max(1, checkpoints // 10) == 0:
                    progress(f"checkpoint {i + 1}/{checkpoints}: pause p50 "
                             f"{percentiles_ms(rep.fork_s).get('p50', 0.0)} ms")
                continue
            t0 = time.perf_counter()
            while any(runner.call_workers(worker_reap)):  # one image in progress at a time
                time.sleep(0.0002)
            rep.image_wait_s.append(time.perf_counter() - t0)
            if pending is not None:
                for q in range(queues):
                    collect_image(f"{pending}-{q}")
            pending = os.path.join(tmp.name, f"c{i}")
            t0 = time.perf_counter()
            forks = runner.call_workers(worker_fork_image, pending)
            rep.roundtrip_s.append(time.perf_counter() - t0)
            if i:  # the first fork also moves the workers' memory to huge pages (one-time)
                rep.fork_s.extend(f[2] for f in forks)
                rep.fork_cpu_s.extend(f[3] for f in forks)
            if i % verify_every == 0 or i == checkpoints - 1:
                sync = runner.call_workers(_sync_image)  # the same cut: no batch since the fork
                while any(runner.call_workers(worker_reap)):
                    time.sleep(0.0002)
                _verify([collect_image(f"{pending}-{q}") for q in range(queues)], sync)
                pending = None
                rep.verified += 1
            if progress is not None and (i + 1) % max(1, checkpoints // 10) == 0:
                progress(f"checkpoint {i + 1}/{checkpoints}: fork p50 "
                         f"{percentiles_ms(rep.fork_s).get('p50', 0.0)} ms")
        rep.memory = runner.call_workers(worker_memory)
        rep.loadavg = os.getloadavg()
        return rep
    finally:
        deadline = time.monotonic() + 10.0
        try:
            while any(runner.call_workers(worker_reap)) and time.monotonic() < deadline:
                time.sleep(0.001)
        except Exception as exc:  # the runner is gone: its children went with it
            print(f"pause: could not reap checkpoint children: {exc}", file=sys.stderr)
        runner.close()
        tmp.cleanup()


def _all_dirty_rounds(flows: int, rounds: int, retain: bool) -> dict[str, Any]:
    from .. import _core, traffic
    from ..tables import FlowTable, FlowTableImage

    retained = _core.retain_heap() if retain else False
    pkt = traffic.generate(flows, flows, seed=1)
    pkt.parse()
    t = FlowTable(max(1024, 2 * flows), np.dtype([("pkts", "<u8"), ("bytes", "<u8")]), idle_timeout_s=30.0)
    t.lookup_or_insert(pkt, ts_ns=1)
    image = FlowTableImage(t.snapshot())
    t.clear_dirty()
    live = t.live_slots(mark_dirty=False)
    delta_s: list[float] = []
    snapshot_s: list[float] = []
    size = 0
    for _ in range(rounds):
        t.values["pkts"][live] += 1  # every flow counted a packet, as a VNF marks it
        t.mark_dirty(live)
        if t.dirty_count() != len(live):
            raise AssertionError(f"{t.dirty_count()} slots dirty, {len(live)} expected")
        t0 = time.perf_counter()
        delta = t.take_delta()
        t1 = time.perf_counter()
        snap = t.snapshot()
        t2 = time.perf_counter()
        delta_s.append(t1 - t0)
        snapshot_s.append(t2 - t1)
        size = len(delta)
        image.apply(delta)
        if image.snapshot() != snap:
            raise AssertionError("the shadow image brought up to date by the delta differs from the table")
    return {"flows": len(live), "delta_bytes": size, "delta_s": delta_s, "snapshot_s": snapshot_s,
            "retained": retained}


def measure_all_dirty(flows: int = 100_000, rounds: int = 30, *, retain_heap: bool = True) -> dict[str, Any]:
    """A table of `flows` flows, each changed (a counter bumped and marked dirty) before each of
    `rounds` checkpoints: per checkpoint, the seconds of ``take_delta()`` and of a whole
    ``snapshot()`` right after it (lists ``delta_s`` / ``snapshot_s``), the delta's size in bytes,
    and whether the heap was retained. Every delta is applied to a shadow image, which must equal
    the table's snapshot (AssertionError otherwise). Runs in a fresh spawned process, so the
    allocator's state is that of a worker (`retain_heap`, as every worker sets it) or of a plain
    process; timing covers the native call and the bytes handed back, not writing them out."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    for name, v in (("flows", flows), ("rounds", rounds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_all_dirty_rounds, flows, rounds, retain_heap).result()
