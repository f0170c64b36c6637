"""Checkpoint pauses and failover on the process master (2 worker processes).

(Throughput and latency cost of replay beside no FT are not here: the recovery master dispatches
one batch per ``ProcessRunner.run`` call, a round trip per batch, so its rate says more about that
than about fault tolerance; measuring the cost needs a master that streams.)

- ``test_checkpoint_pause``: pauses of shipped (``sync``) and copy-on-write (``fork``) checkpoints
  with ``VNFKIT_BENCH_CKPT_FLOWS`` flows per worker (default 100 000); asserts every checkpoint
  was taken (and, in fork mode, every image collected) and every packet released.
- ``test_failover``: SIGKILL of one worker at random points with a hot backup; asserts every trial
  recovered correctly and reports detect / restore / replay.

Figures on a shared 2-core box are indicative. Run:
``PYTHONPATH=python python -m pytest benches/bench_recovery.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from vnfkit.recovery.process_master import process_trial, random_process_trials
from vnfkit.recovery.trials import summarize
from vnfkit.recovery.workloads import workload

CKPT_FLOWS = int(os.environ.get("VNFKIT_BENCH_CKPT_FLOWS", "100000"))
TRIALS = int(os.environ.get("VNFKIT_BENCH_TRIALS", "20"))


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {k: round(float(np.percentile(a, q)), 3) for k, q in (("p50", 50), ("p99", 99), ("p99.9", 99.9))} | {
        "max": round(float(a.max()), 3), "n": len(xs)}


@pytest.mark.parametrize("mode", ["sync", "fork"])
def test_checkpoint_pause(benchmark, mode):
    w = workload("monitor", packets=2 * 2 * CKPT_FLOWS, flows=2 * CKPT_FLOWS, batch=4096, seed=12)
    out = {}

    def run() -> None:
        out["r"] = process_trial(w, None, strategy="replay", checkpoint_every=4, checkpoint_mode=mode,
                                 oracle=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    assert r.released_master == sum(len(b) for b in w.batches)
    assert len(r.checkpoint_pauses_s) == 1 + len(w.batches) // 4 >= 2
    benchmark.extra_info["flows_per_worker"] = CKPT_FLOWS
    benchmark.extra_info["pause_ms"] = _pct(r.checkpoint_pauses_s[1:])  # the first cut is of empty tables
    if mode == "fork":
        benchmark.extra_info["fork_ms"] = _pct(r.checkpoint_fork_s[1:])


def test_failover(benchmark):
    out = {}

    def run() -> None:
        out["rs"] = random_process_trials("mazunat", "replay", TRIALS, seed=13, packets=20_000,
                                          checkpoint_interval_s=0.050, backup_mode="hot")

    benchmark.pedantic(run, rounds=1, iterations=1)
    s = summarize(out["rs"])
    assert s["correct"] == TRIALS, s
    for k in ("recovery_ms", "detect_ms", "restore_ms", "replay_ms"):
        benchmark.extra_info[k] = {q: round(v, 2) for q, v in s[k].items()}
