"""Copy-on-write checkpoint pauses of MazuNAT workers holding 100 k flows each (2 worker processes).

``test_fork_checkpoint_pause``: MazuNAT (endpoint-dependent mapping, so one address's port pool
serves every flow; ``max_flows`` 262 144) is loaded with ``VNFKIT_BENCH_CKPT_FLOWS`` flows per
worker (default 100 000), then takes ``VNFKIT_BENCH_CKPT_N`` fork checkpoints (default 1 000), one
batch of 1 024 packets of those flows between two. Reported per worker and checkpoint: the fork's
wall time (the worker's pause), its CPU time (the pause without the time a loaded box kept the
worker off a core), the dispatcher's round trip, and the KiB the workers still map in small pages,
with the workers' memory moved to huge pages at the first fork (``huge``) and without (``small``),
and the load average. ``delta``: no fork; each worker writes what its tables' dirty tracking saw
change since its previous checkpoint (plus its VNF state) and the dispatcher, as checkpointer,
brings its shadow images up to date (:func:`vnfkit.recovery.cow.worker_delta_image`); the pause
reported is the worker's whole stop for the checkpoint (VNF snapshot, table deltas, pickling,
writing the file to tmpfs), and ``apply_ms`` the dispatcher's work per checkpoint. Asserts that every checkpoint was taken, that the workers held the flows,
and that every 100th forked image (and the last) equals the live state at the cut and restores
bit for bit (:func:`vnfkit.recovery.pause.measure_fork_pauses`).

Figures on a shared 2-core virtual machine are indicative. Run:
``PYTHONPATH=python python -m pytest benches/bench_checkpoint.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from vnfkit import traffic
from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.recovery.pause import measure_all_dirty, measure_fork_pauses

FLOWS = int(os.environ.get("VNFKIT_BENCH_CKPT_FLOWS", "100000"))
CHECKPOINTS = int(os.environ.get("VNFKIT_BENCH_CKPT_N", "1000"))


def split_batches(b, size: int) -> list:
    return [b.select(np.arange(s, min(s + size, len(b)), dtype=np.uint32)) for s in range(0, len(b), size)]


@pytest.mark.parametrize("pages", ["huge", "small", "delta"])
def test_fork_checkpoint_pause(benchmark, pages):
    load = split_batches(traffic.generate(2 * FLOWS, 2 * FLOWS, seed=1), 4096)  # one packet per flow
    more = split_batches(traffic.generate(2 * FLOWS, 8 * FLOWS, seed=1), 1024)[:64]  # the same flows again
    cfg = {"endpoint_dependent": True, "max_flows": 262144}
    out = {}

    def run() -> None:
        out["r"] = measure_fork_pauses(MazuNAT, cfg, load, more, checkpoints=CHECKPOINTS, verify_every=100,
                                       huge_pages=pages == "huge", mode="delta" if pages == "delta" else "fork")

    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    assert len(r.roundtrip_s) == CHECKPOINTS and len(r.fork_s) == 2 * (CHECKPOINTS - 1)
    assert sum(r.flows) >= 0.99 * 2 * FLOWS  # the workers held the flows (a few may share a mapping)
    assert r.verified == (CHECKPOINTS - 1) // 100 + 1 + ((CHECKPOINTS - 1) % 100 != 0)
    benchmark.extra_info.update(r.summary())


@pytest.mark.parametrize("heap", ["retained", "default"])
def test_all_dirty_delta_vs_snapshot(benchmark, heap):
    """A table of ``VNFKIT_BENCH_CKPT_FLOWS`` flows, every one of which changed since the last
    checkpoint (a per-flow counter bumped and marked, as a VNF does): ``take_delta()`` against a
    whole ``snapshot()`` of the same table timed in the same run, checkpoint by checkpoint, in a
    fresh process whose allocator keeps freed large blocks as a worker's does (``retained``) or not
    (``default``). Timing covers the native call and the bytes handed back to Python, not writing
    them anywhere. Asserts that each delta brings a shadow image to exactly the live table's
    snapshot (:func:`vnfkit.recovery.pause.measure_all_dirty`). In a fresh process the two heaps
    time alike; the difference shows in a worker that has processed traffic (its image stalls,
    ``worker_stall_cpu_ms`` of ``bench_recovery.py -k large_tables``)."""
    rounds = int(os.environ.get("VNFKIT_BENCH_DELTA_ROUNDS", "30"))
    out = {}

    def run() -> None:
        out["r"] = measure_all_dirty(FLOWS, rounds, retain_heap=heap == "retained")

    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    assert len(r["delta_s"]) == rounds and r["flows"] >= 0.99 * FLOWS
    assert r["retained"] == (heap == "retained")
    d, s = np.asarray(r["delta_s"]) * 1e3, np.asarray(r["snapshot_s"]) * 1e3
    ratio = d / s

    def pct(a):
        return {q: round(float(np.percentile(a, p)), 3) for q, p in (("p10", 10), ("p50", 50), ("p90", 90))} | {
            "max": round(float(a.max()), 3)}

    benchmark.extra_info.update({"flows": r["flows"], "delta_mb": round(r["delta_bytes"] / 1e6, 2),
                                 "delta_ms": pct(d), "snapshot_ms": pct(s), "delta_over_snapshot": pct(ratio)})
