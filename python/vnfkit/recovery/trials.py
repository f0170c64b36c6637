"""Many recovery trials with random crash points, and their totals (what ``recovery-test`` reports).

:func:`run_trials` draws, per trial, a crash batch and phase from ``numpy.random.default_rng(seed)``,
runs the :class:`~.harness.Harness` on a fresh workload and storage, and :func:`summarize` gives
``trials``, ``correct``, ``incorrect``, recovery-time percentiles (detect + restore + replay, and
each part) and ``released_packets``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import PHASES, Harness, TrialResult
from .storage.base import StableStorage
from .storage.memory import MemoryStorage
from .workloads import workload

__all__ = ["run_trials", "summarize"]


def run_trials(nf: str, strategy: str, trials: int, seed: int = 0, *, packets: int = 20_000, batch: int = 256,
               queues: int = 2, checkpoint_interval_s: float = 0.050,
               storage: Callable[[], StableStorage] = MemoryStorage,
               on_trial: Callable[[int, TrialResult], None] | None = None) -> list[TrialResult]:
    """`trials` crash-and-recover trials of middlebox `nf` under `strategy`, each at a random crash point
    (packet, worker, phase) drawn from `seed`; `on_trial(i, result)` is called after each."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials: expected a positive int, got {trials!r}")
    rng = np.random.default_rng(seed)
    out = []
    for t in range(trials):
        w = workload(nf, packets=packets, flows=max(10, packets // 20), batch=batch, seed=int(rng.integers(1 << 31)))
        st = storage()
        h = Harness(w.vnf, w.config, queues=queues, strategy=strategy, storage=st,
                    checkpoint_interval_s=checkpoint_interval_s, per_flow_decisions=w.per_flow_decisions,
                    non_monotone=w.non_monotone)
        crash = int(rng.integers(1, len(w.batches) - 1))
        phase = PHASES[int(rng.integers(len(PHASES)))]
        try:
            r = h.run(w.batches, crash, phase)
        finally:
            st.close()
        out.append(r)
        if on_trial is not None:
            on_trial(t, r)
    return out


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    """Totals of several trials: counts of correct / incorrect, recovery-time percentiles (ms) with the
    detect / handover / restore / replay split, and the packets released."""
    ok = sum(r.verdict.correct for r in results)
    return {
        "trials": len(results), "correct": ok, "incorrect": len(results) - ok,
        "recovery_ms": _pct([r.recovery_s for r in results]),
        "detect_ms": _pct([r.detect_s for r in results]),
        "handover_ms": _pct([r.handover_s for r in results]),
        "restore_ms": _pct([r.recovery.restore_s for r in results]),
        "replay_ms": _pct([r.recovery.replay_s for r in results]),
        "checkpoint_pause_ms": _pct([p for r in results for p in r.checkpoint_pauses_s] or [0.0]),
        "released_packets": sum(r.released_master + r.released_backup for r in results),
        "false_suspicions": sum(r.false_suspicions for r in results),
    }
