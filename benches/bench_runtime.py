"""The multi-core runtime end to end: MazuNAT through the process backend vs its same-run baselines.

Workload: generated traffic with replies (heavy-tailed flows arriving all the time, packet time
advancing so expiry runs, determinant logging on), fed through ``run_with_replies`` (a remote host
answers every translated packet; replies enter the runner interleaved with the trace).

- ``test_runtime``: process backend, 1 and 2 workers, B = 256 and 1 024; thread backend, 1 and 2
  queues; each asserts the run's totals equal ``process()`` alone on the same traffic.
- ``test_process_alone``: ``MazuNAT.process()`` in this process on the same batches (parse and RSS
  done before timing) -- the 1-worker ceiling. ``test_dispatch_alone``: the process backend with a
  VNF that does nothing -- the dispatcher's own ceiling. The ideal two-core figure is
  1 / (1/dispatch + 1/(2 * process)) when dispatcher and workers share two cores.
- ``test_latency``: open loop (``run_paced``), B = 256, T = 50 us, at 1 Mpps and at 50 % / 90 % of
  the measured 1-worker capacity; p50/p99/p99.9 and a latency-vs-load PNG (``VNFKIT_BENCH_OUT``,
  default ``benches/out``).

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
from vnfkit.nfs.mazunat import MazuNAT, run_with_replies
from vnfkit.runtime import Runner, iter_batches
from vnfkit.state import SharedState
from vnfkit.vnf import VNF, Context

FLOWS = int(os.environ.get("VNFKIT_BENCH_FLOWS", "10000"))
PACKETS = int(os.environ.get("VNFKIT_BENCH_PACKETS", "200000"))
OUT = os.environ.get("VNFKIT_BENCH_OUT", os.path.join(os.path.dirname(__file__), "out"))
RESULTS: dict[str, Any] = {}


class NoOp(VNF):
    """Forwards everything to port 1: the runtime's own cost."""

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        batch.port[:] = 1


@lru_cache(maxsize=1)
def trace() -> _core.PacketBatch:
    return traffic.generate(flows=FLOWS, packets=PACKETS, seed=42)


def fresh() -> _core.PacketBatch:
    t = trace()
    return t.select(np.arange(len(t), dtype=np.uint32))


def process_alone(batch: int) -> tuple[float, int, int]:
    """MazuNAT.process() alone, 1 queue, with replies: (Mpps, packets, forwarded)."""
    nat = MazuNAT()
    ctx = Context(0, 1, shared=SharedState(), logged=True)
    nat.setup(ctx)
    from vnfkit.nfs.mazunat import replies_to

    parts = list(iter_batches(fresh(), batch))
    for p in parts:
        p.parse()
    packets = fwd = 0
    busy = 0.0
    pending: list[_core.PacketBatch] = []
    todo = list(parts)
    while todo:
        b = todo.pop(0)
        t0 = time.perf_counter()
        nat.process(b, ctx)
        busy += time.perf_counter() - t0
        packets += len(b)
        fwd += int(np.count_nonzero(b.port))
        rep = replies_to(b)
        if rep is not None:
            rep.parse()
            pending.append(rep)
        if not todo and pending:
            todo, pending = pending, []
    return packets / busy / 1e6, packets, fwd


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
def test_process_alone(benchmark, batch: int) -> None:
    mpps, packets, fwd = benchmark.pedantic(lambda: process_alone(batch), rounds=1, iterations=1)
    assert packets >= PACKETS and fwd > 0
    RESULTS[f"alone-{batch}"] = (mpps, packets, fwd)
    benchmark.extra_info.update({"mpps": round(mpps, 2), "packets": packets, "parse": False, "rss": False})


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
def test_dispatch_alone(benchmark, batch: int) -> None:
    with Runner(NoOp, backend="process", queues=1, batch_size=batch) as r:
        res = benchmark.pedantic(lambda: r.run(iter_batches(fresh(), batch)), rounds=1, iterations=1)
    assert res.packets == PACKETS and res.forwarded == PACKETS
    RESULTS[f"dispatch-{batch}"] = res.mpps
    benchmark.extra_info.update({"mpps": round(res.mpps, 2), "dispatcher_cpu_s": round(res.dispatcher_cpu_s, 3)})


@pytest.mark.benchmark(group="runtime")
@pytest.mark.parametrize("batch", [256, 1024])
@pytest.mark.parametrize("backend,workers", [("process", 1), ("process", 2), ("thread", 1), ("thread", 2)])
def test_runtime(benchmark, backend: str, workers: int, batch: int) -> None:
    kw: dict[str, Any] = {"batch_size": batch} if backend == "process" else {}
    with Runner(MazuNAT, backend=backend, queues=workers, logged=True, **kw) as r:
        res = benchmark.pedantic(lambda: run_with_replies(r, iter_batches(fresh(), batch)), rounds=1, iterations=1)
    # every trace packet and the replies to it went through; replies interleave with the trace as
    # outputs come back, so their count varies with timing (exact per-packet equality across
    # backends is tests/test_process_runner.py's job, on a deterministic schedule)
    assert res.packets > PACKETS and res.forwarded > 0.9 * PACKETS
    assert set(res.drops) <= {"no-mapping", "pool-exhausted", "policy", "table-full"}
    RESULTS[f"{backend}-{workers}-{batch}"] = res.mpps
    info = {"mpps": round(res.mpps, 2), "wall_s": round(res.wall_s, 3), "p50_us": round(res.p50_us, 1),
            "dispatcher_cpu_s": round(res.dispatcher_cpu_s, 3),
            "worker_cpu_s": [round(q.cpu_ns / 1e9, 3) for q in res.queues],
            "worker_busy_s": [round(q.busy_ns / 1e9, 3) for q in res.queues]}
    alone = RESULTS.get(f"alone-{batch}")
    if alone:
        info["vs_process_alone"] = round(res.mpps / alone[0], 2)
    one = RESULTS.get(f"{backend}-1-{batch}")
    if workers == 2 and one:
        info["vs_1_worker"] = round(res.mpps / one, 2)
    disp = RESULTS.get(f"dispatch-{batch}")
    if workers == 2 and alone and disp:
        info["ideal_2core_mpps"] = round(1 / (1 / disp + 1 / (2 * alone[0])), 2)
    benchmark.extra_info.update(info)


def _latency_run(rate: float) -> Any:
    t = fresh()
    with Runner(MazuNAT, backend="process", queues=1, logged=True, batch_size=256, flush_us=50) as r:
        return r.run_paced(t, rate)


@pytest.mark.benchmark(group="runtime-latency")
def test_latency(benchmark) -> None:
    cap = RESULTS.get("process-1-256")
    if cap is None:
        with Runner(MazuNAT, backend="process", queues=1, logged=True, batch_size=256) as r:
            cap = r.run(iter_batches(fresh(), 256)).mpps
    rates = sorted({1e6, 0.5 * cap * 1e6, 0.9 * cap * 1e6})
    rows = []
    for rate in rates:
        res = _latency_run(rate)
        assert res.packets == PACKETS and res.latency.total == PACKETS
        rows.append({"offered_mpps": round(rate / 1e6, 3), "p50_us": round(res.p50_us, 1),
                     "p99_us": round(res.p99_us, 1), "p999_us": round(res.p999_us, 1),
                     "achieved_mpps": round(res.mpps, 3)})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update({"capacity_1_worker_mpps": round(cap, 3), "B": 256, "T_us": 50, "rows": rows})
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
    ax.set_title(f"MazuNAT, 1 worker process, B=256, T=50 us (capacity {cap:.2f} Mpps)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path = os.path.join(OUT, "runtime_latency.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    assert os.path.getsize(path) > 1000
