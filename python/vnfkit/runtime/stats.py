"""Run statistics: per-queue counters and latency histograms, and the result of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from ..hdr import HdrHistogram

__all__ = ["QueueStats", "RunResult"]


@dataclass
class QueueStats:
    """Per-queue counters kept by the runner (updated by the caller's thread at release)."""

    queue: int
    packets: int = 0
    forwarded: int = 0
    dropped: int = 0
    batches: int = 0
    busy_ns: int = 0
    #: CPU time of the queue's worker (process backend: its process's user+system time; 0 otherwise)
    cpu_ns: int = 0
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
            "cpu_s": self.cpu_ns / 1e9,
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
    #: CPU time of the dispatcher (the calling process) during the run, seconds
    dispatcher_cpu_s: float = 0.0

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

    @property
    def p999_us(self) -> float:
        return self.latency.percentile(99.9) / 1e3 if self.latency.total else 0.0

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
                acc.cpu_ns += s.cpu_ns
                for k, v in s.drops.items():
                    acc.drops[k] = acc.drops.get(k, 0) + v
                acc.latency.merge(s.latency)
            queues.append(acc)
        merged = HdrHistogram()
        for qs in queues:
            merged.merge(qs.latency)
        return RunResult(queues, dict(results[-1].vnf_stats), sum(r.wall_s for r in results), merged,
                         sum(r.dispatcher_cpu_s for r in results))

    def summary(self) -> dict[str, Any]:
        """Totals, drops by reason, Mpps, p50/p99 latency and the VNF's counters, as a dict."""
        return {
            "packets": self.packets, "forwarded": self.forwarded, "dropped": self.dropped,
            "drops": self.drops, "wall_s": self.wall_s, "mpps": self.mpps,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "p999_us": self.p999_us,
            "dispatcher_cpu_s": self.dispatcher_cpu_s, "vnf": dict(self.vnf_stats),
            "queues": [q.summary() for q in self.queues],
        }
