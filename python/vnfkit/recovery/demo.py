"""The recovery half of ``vnfkit demo``: MazuNAT with and without fault tolerance, one real SIGKILL.

:func:`recovery_demo` runs the same generated trace, with a remote host answering every translated
packet (:func:`vnfkit.traffic.replies_to`), twice:

1. no fault tolerance, no crash -- the baseline (:class:`~.harness.Harness`, strategy ``none``);
2. checkpoint + replay on a master in a forked child process that is killed with ``SIGKILL`` once it
   has released half the trace (:func:`~.sigkill.sigkill_trial`): the pidfd reports the death, the
   passive backup restores the last checkpoint from file storage, replays, goes live on the rest of
   the traffic, and the oracle judges every released packet.

Latency here is per released packet: release time minus the time the input handler admitted its
input batch (processing, the storage sync and output commit included). :func:`plot_latency` draws
it over time around the crash.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Harness, TrialResult
from .oracle import TimedReleased
from .sigkill import Timeline, sigkill_trial
from .storage.file import FileStorage
from .workloads import Workload, workload

__all__ = ["DemoResult", "RunFigures", "plot_latency", "recovery_demo"]


@dataclass
class RunFigures:
    """Throughput and latency of one run (latency in microseconds)."""

    packets: int
    wall_s: float
    p50_us: float
    p99_us: float
    p999_us: float

    @property
    def kpps(self) -> float:
        return self.packets / self.wall_s / 1e3 if self.wall_s > 0 else 0.0

    @classmethod
    def of(cls, latency_us: np.ndarray, wall_s: float) -> RunFigures:
        p = np.percentile(latency_us, [50, 99, 99.9]) if len(latency_us) else np.zeros(3)
        return cls(len(latency_us), wall_s, float(p[0]), float(p[1]), float(p[2]))


@dataclass
class DemoResult:
    baseline: RunFigures
    recovered: RunFigures
    trial: TrialResult
    timeline: Timeline
    trace_packets: int


def _responder(b: Any) -> Any:
    from ..traffic import replies_to

    return replies_to(b, port=1)


def _workload(packets: int, flows: int, batch: int, seed: int) -> Workload:
    return workload("mazunat", packets=packets, flows=flows, batch=batch, seed=seed)


def _baseline(w: Workload, queues: int) -> RunFigures:
    rel = TimedReleased()
    admitted: dict[int, int] = {}  # first id of each input batch -> admit time
    h = Harness(w.vnf, w.config, queues=queues, strategy="none", heartbeat=False)
    t0 = time.perf_counter()
    h.run(w.batches, None, released=rel, respond=_responder,
          on_admit=lambda seq, b, t: admitted.__setitem__(int(b.packet_id[0]), t) if len(b) else None)
    wall = time.perf_counter() - t0
    firsts = np.array(sorted(admitted), np.int64)
    times = np.array([admitted[f] for f in firsts], np.int64)
    ids = np.asarray(rel.packet_id, np.int64)
    lat = (np.asarray(rel.t_ns, np.int64) - times[np.searchsorted(firsts, ids, side="right") - 1]) / 1e3
    return RunFigures.of(lat, wall)


def recovery_demo(*, packets: int = 150_000, flows: int = 3000, queues: int = 2, batch: int = 256, seed: int = 1,
                  checkpoint_interval_s: float = 0.050, kill_fraction: float = 0.6) -> DemoResult:
    """The two runs of the module docstring; the kill comes once the master has released about
    ``kill_fraction`` of all packets (the trace's and the remote host's replies: twice the trace)."""
    if not 0 < kill_fraction < 1:
        raise ValueError(f"kill_fraction: must be in (0, 1), got {kill_fraction!r}")
    base = _baseline(_workload(packets, flows, batch, seed), queues)
    w = _workload(packets, flows, batch, seed)
    with tempfile.TemporaryDirectory(prefix="vnfkit-demo-storage-") as root:
        t0 = time.perf_counter()
        r = sigkill_trial(w, lambda: FileStorage(Path(root) / "fs"), queues=queues,
                          checkpoint_interval_s=checkpoint_interval_s, kill_at_released=int(2 * packets * kill_fraction),
                          respond=_responder, timeline=True)
        wall = time.perf_counter() - t0
    tl = r.timeline
    return DemoResult(base, RunFigures.of(tl.latency_us, wall), r, tl, packets)


def plot_latency(tl: Timeline, path: str | Path, title: str) -> None:
    """Latency of every released packet over its admit time: the whole run and a zoom on the crash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = int(min(tl.admit_ns.min(), tl.kill_ns))
    x = (tl.admit_ns - t0) / 1e6
    y = np.maximum(tl.latency_us, 1e-3) / 1e3
    kill, detect, live = ((v - t0) / 1e6 for v in (tl.kill_ns, tl.detect_ns, tl.live_ns))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, zoom in zip(axes, (False, True)):
        for side, label, color in ((0, "master (before the kill)", "tab:blue"), (1, "backup (after failover)", "tab:orange")):
            m = tl.side == side
            ax.scatter(x[m], y[m], s=2, c=color, label=label, rasterized=True)
        ax.axvline(kill, color="red", lw=1, label="SIGKILL")
        ax.axvspan(kill, detect, color="red", alpha=0.15, label="detection")
        ax.axvspan(detect, live, color="grey", alpha=0.25, label="restore + replay")
        ax.set_yscale("log")
        ax.set_xlabel("input admitted at (ms since start)")
        ax.set_ylabel("latency (ms, admit to release)")
        if zoom:
            span = max(live - kill, 1.0)
            ax.set_xlim(kill - 3 * span, live + 3 * span)
            ax.set_title("around the crash")
        else:
            ax.set_title(title)
            ax.legend(loc="upper left", fontsize=8, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
