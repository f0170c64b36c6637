"""The multi-core runtime end to end: MazuNAT through the process backend vs its same-run baselines.

Workload: generated traffic with replies (heavy-tailed flows arriving all the time, packet time
advancing so expiry runs, determinant logging on) as **one fixed two-way trace built before any
timing** (:func:`two_way`): MazuNAT is run once per queue count on the outbound trace (thread
backend, untimed) to learn its translations, the remote hosts' replies to them
(``traffic.replies_to``) are merged into the trace by time (``traffic.merge_by_time``), and that is
repeated until the replies stop changing (replies keep mappings alive, which can change later
translations). MazuNAT's decisions do not depend on the backend or on batch boundaries (per-queue
round-robin port shares), so every backend and the baseline then see the same packets and take the
same decisions; the remote host never runs inside a timed region.

- ``test_runtime``: process backend, 1 and 2 workers, B = 256 and 1 024; thread backend, 1 and 2
  queues. Timed: ``run()`` over pre-cut unparsed batches (assign ids + parse + RSS + dispatch +
  ``process()`` in the workers + release with per-packet latency). Each asserts its totals and drops
  by reason equal the thread backend's on the same trace, and that replies hit their mappings
  ("no-mapping" below 0.5 % of the replies).
- ``test_process_alone``: ``MazuNAT.process()`` in this process on the same 1-queue trace cut into
  the same batches, parsed before timing (no RSS, no ids) -- the 1-worker ceiling.
  ``test_dispatch_alone``: the process backend with a VNF that does nothing -- the dispatcher's own
  ceiling (same timed region as ``test_runtime``). The ideal two-core figure is
  1 / (1/dispatch + 1/(2 * process)) when dispatcher and workers share two cores.
- ``test_latency``: open loop (``run_paced``), B = 256, T = 20 us (``VNFKIT_BENCH_FLUSH_US``), at
  1 Mpps and at 50 % / 90 % of the measured 1-worker capacity, plus 1 Mpps at T = 50 us;
  p50/p99/p99.9 and a latency-vs-load PNG (``VNFKIT_BENCH_OUT``, default ``benches/out``).
- 2-worker rows also give ``cpu_bound_vs_1_worker``: (2 cores / CPU seconds per packet of the
  dispatcher and both workers) over (1 / CPU seconds per packet of the 1-worker run's worker): the
  ratio two fully used cores would give, which other tenants of a shared box do not change much.

Figures on a shared box are indicative. Run: ``PYTHONPATH=python python -m pytest benches/bench_runtime.py``.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.runtime import Runner, iter_batches
from vnfkit.state import SharedState
from vnfkit.vnf import VNF, Context

FLOWS = int(os.environ.get("VNFKIT_BENCH_FLOWS", "10000"))
PACKETS = int(os.environ.get("VNFKIT_BENCH_PACKETS", "200000"))
OUT = os.environ.get("VNFKIT_BENCH_OUT", os.path.join(os.path.dirname(__file__), "out"))
# T of the latency runs. A partial slab past T waits while its worker is still busy (the runtime's
# hold_while_busy), so a small T costs no throughput: batches grow whenever the worker lags.
FLUSH_US = float(os.environ.get("VNFKIT_BENCH_FLUSH_US", "20"))
REPLY_DELAY_NS = 20_000  # the remote hosts answer 20 us after the NAT sent a packet
RESULTS: dict[str, Any] = {}


class NoOp(VNF):
    """Forwards everything to port 1: the runtime's own cost."""

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        batch.port[:] = 1


def copy_of(b: _core.PacketBatch) -> _core.PacketBatch:
    return b.select(np.arange(len(b), dtype=np.uint32))


def _outbound(b: _core.PacketBatch) -> _core.PacketBatch:
    return b.select(np.flatnonzero(b.packet_id < np.uint64(traffic.REPLY_ID_OFFSET)).astype(np.uint32))


def _run_thread(t: _core.PacketBatch, queues: int) -> tuple[Any, list[_core.PacketBatch]]:
    outs: list[_core.PacketBatch] = []
    with Runner(MazuNAT, backend="thread", queues=queues, logged=False, assign_ids=False) as r:
        res = r.run(iter_batches(copy_of(t), 1024), on_output=lambda q, b: outs.append(b))
    return res, outs


@lru_cache(maxsize=2)
def two_way(queues: int) -> _core.PacketBatch:
    """The outbound trace merged by time with the replies MazuNAT's translations (with `queues`
    queues) draw, iterated to a fixed point (at most 4 rounds). Unparsed; packet ids: the trace's,
    replies' = their packet's + REPLY_ID_OFFSET."""
    base = traffic.generate(flows=FLOWS, packets=PACKETS, seed=42)
    cur = base
    prev = None
    for _ in range(4):
        _, outs = _run_thread(cur, queues)
        reps = [traffic.replies_to(_outbound(b), delay_ns=REPLY_DELAY_NS) for b in outs]
        reps = [r for r in reps if r is not None]
        rep = traffic.merge_by_time(reps)
        assert rep is not None
        sig = (rep.packet_id.copy(), rep.data.copy())
        cur = traffic.merge_by_time([copy_of(base), rep])
        assert cur is not None
        if prev is not None and np.array_equal(prev[0], sig[0]) and np.array_equal(prev[1], sig[1]):
            break
        prev = sig
    return cur


@lru_cache(maxsize=2)
def reference(queues: int) -> Any:
    """The thread backend's result on two_way(queues) (untimed): what every timed run must match."""
    return _run_thread(two_way(queues), queues)[0]


def batches_of(t: _core.PacketBatch, size: int) -> list[_core.PacketBatch]:
    return list(iter_batches(t, size))


def check_result(res: Any, queues: int) -> None:
    ref = reference(queues)
    t = two_way(queues)
    replies = int(np.count_nonzero(t.packet_id >= np.uint64(traffic.REPLY_ID_OFFSET)))
    assert res.packets == len(t)
    assert (res.forwarded, res.drops) == (ref.forwarded, ref.drops)
    assert set(res.drops) <= {"no-mapping", "pool-exhausted", "policy", "table-full"}
    assert res.drops.get("no-mapping", 0) < 0.005 * replies


def process_alone(batch: int) -> tuple[float, int, int, dict[str, int]]:
    """MazuNAT.process() alone, 1 queue, on the two-way trace: (Mpps, packets, forwarded, drops)."""
    nat = MazuNAT()
    ctx = Context(0, 1, shared=SharedState(), logged=True)
    nat.setup(ctx)
    parts = batches_of(two_way(1), batch)
    for p in parts:
        p.parse()
    drops: dict[str, int] = {}
    packets = fwd = 0
    t0 = time.perf_counter()
    for b in parts:
        nat.process(b, ctx)
        if ctx.state is not None:
            ctx.state.drain_chunk()  # as a worker does after every batch
    busy = time.perf_counter() - t0
    for b in parts:
        packets += len(b)
        fwd += int(np.count_nonzero(b.port))
        for k, v in b.drop_counts().items():
            drops[k] = drops.get(k, 0) + v
    return packets / busy / 1e6, packets, fwd, dict(sorted(drops.items()))


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
def test_process_alone(benchmark, batch: int) -> None:
    mpps, packets, fwd, drops = benchmark.pedantic(lambda: process_alone(batch), rounds=1, iterations=1)
    ref = reference(1)
    assert packets == len(two_way(1)) and (fwd, drops) == (ref.forwarded, ref.drops)
    RESULTS[f"alone-{batch}"] = (mpps, packets, fwd)
    benchmark.extra_info.update({"mpps": round(mpps, 2), "packets": packets, "parse": False, "rss": False})


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
def test_dispatch_alone(benchmark, batch: int) -> None:
    n = len(two_way(1))
    with Runner(NoOp, backend="process", queues=1, batch_size=batch) as r:
        res = benchmark.pedantic(lambda parts: r.run(parts), setup=lambda: ((batches_of(two_way(1), batch),), {}),
                                 rounds=1, iterations=1)
    assert res.packets == n and res.forwarded == n
    RESULTS[f"dispatch-{batch}"] = res.mpps
    benchmark.extra_info.update({"mpps": round(res.mpps, 2), "dispatcher_cpu_s": round(res.dispatcher_cpu_s, 3),
                                 "dispatcher_cpu_mpps": round(n / res.dispatcher_cpu_s / 1e6, 2) if res.dispatcher_cpu_s else None})


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
@pytest.mark.parametrize("backend,workers", [("process", 1), ("process", 2), ("thread", 1), ("thread", 2)])
def test_runtime(benchmark, backend: str, workers: int, batch: int) -> None:
    kw: dict[str, Any] = {"batch_size": batch} if backend == "process" else {}
    reference(workers)  # built before timing
    with Runner(MazuNAT, backend=backend, queues=workers, logged=True, **kw) as r:
        res = benchmark.pedantic(lambda parts: r.run(parts), setup=lambda: ((batches_of(two_way(workers), batch),), {}),
                                 rounds=1, iterations=1)
    check_result(res, workers)
    RESULTS[f"{backend}-{workers}-{batch}"] = res.mpps
    info = {"mpps": round(res.mpps, 2), "wall_s": round(res.wall_s, 3), "p50_us": round(res.p50_us, 1),
            "dispatcher_cpu_s": round(res.dispatcher_cpu_s, 3),
            "worker_cpu_s": [round(q.cpu_ns / 1e9, 3) for q in res.queues],
            "worker_busy_s": [round(q.busy_ns / 1e9, 3) for q in res.queues],
            # rates per CPU second of each process: what the split would give with a core each (on a
            # loaded box wall-clock Mpps mostly measure the other tenants)
            "dispatcher_cpu_mpps": round(res.packets / res.dispatcher_cpu_s / 1e6, 2) if res.dispatcher_cpu_s else None,
            "worker_cpu_mpps": [round(q.packets / q.cpu_ns * 1e3, 2) if q.cpu_ns else None for q in res.queues]}
    alone = RESULTS.get(f"alone-{batch}")
    if alone:
        info["vs_process_alone"] = round(res.mpps / alone[0], 2)
    one = RESULTS.get(f"{backend}-1-{batch}")
    if workers == 2 and one:
        info["vs_1_worker"] = round(res.mpps / one, 2)
    # load-independent view: CPU seconds per packet. One worker is bound by its worker's CPU;
    # two workers by everything (dispatcher + both workers) over the two cores they share.
    total_cpu = res.dispatcher_cpu_s + sum(q.cpu_ns for q in res.queues) / 1e9
    if backend == "process" and workers == 1 and res.queues[0].cpu_ns:
        RESULTS[f"cpu1-{batch}"] = res.packets / (res.queues[0].cpu_ns / 1e9)
    cpu1 = RESULTS.get(f"cpu1-{batch}")
    if backend == "process" and workers == 2 and cpu1 and total_cpu > 0:
        info["two_core_cpu_mpps"] = round(2 * res.packets / total_cpu / 1e6, 2)
        info["cpu_bound_vs_1_worker"] = round(2 * res.packets / total_cpu / cpu1, 2)
    disp = RESULTS.get(f"dispatch-{batch}")
    if workers == 2 and alone and disp:
        info["ideal_2core_mpps"] = round(1 / (1 / disp + 1 / (2 * alone[0])), 2)
    benchmark.extra_info.update(info)


def _latency_run(rate: float, flush_us: float = FLUSH_US) -> Any:
    t = copy_of(two_way(1))
    with Runner(MazuNAT, backend="process", queues=1, logged=True, batch_size=256, flush_us=flush_us) as r:
        return r.run_paced(t, rate)


@pytest.mark.benchmark(group="runtime-latency")
def test_latency(benchmark) -> None:
    cap = RESULTS.get("process-1-256")
    if cap is None:
        with Runner(MazuNAT, backend="process", queues=1, logged=True, batch_size=256) as r:
            cap = r.run(batches_of(two_way(1), 256)).mpps
    n = len(two_way(1))
    rates = sorted({1e6, 0.5 * cap * 1e6, 0.9 * cap * 1e6})
    rows = []
    for rate, flush_us in [(r, FLUSH_US) for r in rates] + ([(1e6, 50.0)] if FLUSH_US != 50 else []):
        res = _latency_run(rate, flush_us)
        assert res.packets == n and res.latency.total == n
        check_result(res, 1)
        rows.append({"offered_mpps": round(rate / 1e6, 3), "T_us": flush_us, "p50_us": round(res.p50_us, 1),
                     "p99_us": round(res.p99_us, 1), "p999_us": round(res.p999_us, 1),
                     "achieved_mpps": round(res.mpps, 3)})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update({"capacity_1_worker_mpps": round(cap, 3), "B": 256, "T_us": FLUSH_US, "rows": rows})
    rows = [r for r in rows if r["T_us"] == FLUSH_US]  # the plot: one T
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUT, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["offered_mpps"] for r in rows]
    for key in ("p50_us", "p99_us", "p999_us"):
        ax.plot(x, [r[key] for r in rows], marker="o", label=key.replace("_us", ""))
    ax.set_xlabel("offered load (Mpps)")
    ax.set_ylabel("latency, arrival -> release (us)")
    ax.set_yscale("log")
    ax.set_title(f"MazuNAT, 1 worker process, B=256, T={FLUSH_US:g} us (capacity {cap:.2f} Mpps)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path = os.path.join(OUT, "runtime_latency.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    assert os.path.getsize(path) > 1000
