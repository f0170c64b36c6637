"""The rollback-recovery experiment: the study's Table 1 and figures A.3, A.4 and A.5, measured here.

Every run goes through :class:`vnfkit.recovery.harness.Harness` (the in-process master: thread
runner, input handler, output commit, in-process storage) on the recovery workloads of
:mod:`vnfkit.recovery.workloads`, generated with timestamps at ``rate_pps`` (default 50 000 packets
per second of packet time: an in-process Python master on a shared 2-core box takes tens of
thousands of packets per second, so packet time then runs roughly as fast as the wall clock;
checkpoint intervals are in packet time):

* **A.3** latency CDF of MazuNAT: no fault tolerance, checkpoint + replay, and checkpoint +
  buffering with checkpoints every 50 ms and every 200 ms of packet time (the study's two buffering
  variants were application-layer and hypervisor checkpoints; ours are both application-layer, so
  the two intervals stand for a cheap and an expensive checkpoint). Latency of a packet: release
  time minus the time the input handler admitted its batch.
* **A.4** throughput of each middlebox with recovery workloads, without and with replay (the
  WAN optimizer has none yet, so it is absent and the table says so).
* **A.5** replay time at checkpoint intervals of 20, 50, 100 and 200 ms: per middlebox and
  interval, trials with a crash at a random input batch; the backup's replay time.
* **Table 1**: per strategy (checkpoint, buffering, replay) the oracle's verdicts over random
  crashes of MazuNAT, and the median latency each adds to the no-FT baseline.

The study's figures are copied in :data:`STUDY` (source: ETSI GS NFV-REL 002 V1.1.1, Annex A.2
and Table 1) and printed beside ours. Timings on a shared machine are indicative.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..recovery.harness import PHASES, Harness
from ..recovery.oracle import TimedReleased
from ..recovery.storage.memory import MemoryStorage
from ..recovery.workloads import NFS, workload

__all__ = ["STUDY", "RecoveryConfig", "markdown_tables", "run_recovery", "write_outputs"]

#: The study's numbers (ETSI GS NFV-REL 002 V1.1.1, Annex A.2 and Table 1).
STUDY: dict[str, Any] = {
    "table1": {
        "checkpoint": {"correctness": "not guaranteed", "latency": "0 us", "generality": "any legacy VNF binary"},
        "buffer": {"correctness": "guaranteed", "latency": "10s of ms", "generality": "any legacy VNF binary"},
        "replay": {"correctness": "guaranteed", "latency": "10s of us", "generality": "any VNF with source code"},
    },
    "a3": {"baseline_median_us": 70, "replay_added_us": 30, "buffer_app_added_ms": "8-9",
           "buffer_hypervisor_added_ms": "> 50"},
    "a4": {"baseline_mpps": "1-6", "buffering_kpps": "100-200",
           "replay_loss_pct": {"mazunat": 5.6, "simplenat": 12.5, "monitor": 22.0, "adaptive_lb": 30.0}},
    "a5": {"intervals_ms": [20, 50, 100, 200], "replay_ms_range": "10-270"},
}

INTERVALS_MS = (20, 50, 100, 200)


@dataclass
class RecoveryConfig:
    """Sizes of the experiment (the defaults finish in a few minutes on a 2-core box)."""

    rate_pps: float = 50_000.0
    latency_packets: int = 60_000
    throughput_packets: int = 40_000
    table1_trials: int = 6
    table1_packets: int = 8_000
    replay_trials: int = 2
    nfs: tuple[str, ...] = NFS
    intervals_ms: tuple[int, ...] = INTERVALS_MS
    batch: int = 256
    queues: int = 2
    seed: int = 0

    def validated(self) -> RecoveryConfig:
        for name in ("latency_packets", "throughput_packets", "table1_trials", "table1_packets", "replay_trials",
                     "batch", "queues"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if isinstance(self.rate_pps, bool) or not isinstance(self.rate_pps, (int, float)) or not self.rate_pps > 0:
            raise ValueError(f"rate_pps: expected a positive number, got {self.rate_pps!r}")
        bad = [n for n in self.nfs if n not in NFS]
        if bad or not self.nfs:
            raise ValueError(f"nfs: expected a non-empty subset of {list(NFS)}, got {list(self.nfs)}")
        if not self.intervals_ms or any(isinstance(i, bool) or not isinstance(i, int) or i < 1
                                        for i in self.intervals_ms):
            raise ValueError(f"intervals_ms: expected positive ints, got {list(self.intervals_ms)}")
        return self


def _latency_run(cfg: RecoveryConfig, strategy: str, interval_ms: int) -> np.ndarray:
    """Per-packet latency (us) of MazuNAT under `strategy`, no crash."""
    w = workload("mazunat", packets=cfg.latency_packets, flows=max(10, cfg.latency_packets // 20), batch=cfg.batch,
                 seed=cfg.seed, rate_pps=cfg.rate_pps)
    rel = TimedReleased()
    admitted: dict[int, int] = {}
    h = Harness(w.vnf, w.config, queues=cfg.queues, strategy=strategy, storage=MemoryStorage(),
                checkpoint_interval_s=interval_ms / 1e3, heartbeat=False)
    h.run(w.batches, None, released=rel,
          on_admit=lambda seq, b, t: admitted.__setitem__(int(b.packet_id[0]), t) if len(b) else None)
    firsts = np.array(sorted(admitted), np.int64)
    times = np.array([admitted[f] for f in firsts], np.int64)
    ids = np.asarray(rel.packet_id, np.int64)
    return (np.asarray(rel.t_ns, np.int64) - times[np.searchsorted(firsts, ids, side="right") - 1]) / 1e3


def _throughput(cfg: RecoveryConfig, nf: str, strategy: str) -> float:
    """Packets per second of `nf` under `strategy` (no crash), wall time of the master's run."""
    w = workload(nf, packets=cfg.throughput_packets, flows=max(10, cfg.throughput_packets // 20), batch=cfg.batch,
                 seed=cfg.seed, rate_pps=cfg.rate_pps)
    h = Harness(w.vnf, w.config, queues=cfg.queues, strategy=strategy, storage=MemoryStorage(),
                checkpoint_interval_s=0.050, heartbeat=False, per_flow_decisions=w.per_flow_decisions,
                non_monotone=w.non_monotone)
    t0 = time.perf_counter()
    r = h.run(w.batches, None)
    wall = time.perf_counter() - t0
    if r.released_master + r.released_backup <= 0:
        raise RuntimeError(f"{nf}/{strategy}: nothing released")
    return cfg.throughput_packets / wall


def _crash_trials(cfg: RecoveryConfig, nf: str, strategy: str, trials: int, packets: int, interval_ms: int,
                  rng: np.random.Generator) -> list[Any]:
    out = []
    for _ in range(trials):
        w = workload(nf, packets=packets, flows=max(10, packets // 20), batch=cfg.batch,
                     seed=int(rng.integers(1 << 31)), rate_pps=cfg.rate_pps)
        h = Harness(w.vnf, w.config, queues=cfg.queues, strategy=strategy, storage=MemoryStorage(),
                    checkpoint_interval_s=interval_ms / 1e3, per_flow_decisions=w.per_flow_decisions,
                    non_monotone=w.non_monotone)
        crash = int(rng.integers(max(1, len(w.batches) // 2), len(w.batches) - 1))
        out.append(h.run(w.batches, crash, PHASES[int(rng.integers(len(PHASES)))]))
    return out


def _pcts(us: np.ndarray) -> dict[str, float]:
    if not len(us):
        return {"n": 0}
    p = np.percentile(us, [50, 90, 99, 99.9])
    return {"p50_us": float(p[0]), "p90_us": float(p[1]), "p99_us": float(p[2]), "p999_us": float(p[3]),
            "n": int(len(us))}


def run_recovery(cfg: RecoveryConfig | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Run every part (see the module docstring); returns the JSON-able results (plus ``_cdf``,
    the latency samples the figure draws)."""
    cfg = (cfg or RecoveryConfig()).validated()
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    rng = np.random.default_rng(cfg.seed)
    out: dict[str, Any] = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
                           "study": STUDY}
    # A.3: latency
    runs = {"none": ("none", 50), "replay": ("replay", 50), "buffer-50ms": ("buffer", 50),
            "buffer-200ms": ("buffer", 200), "checkpoint": ("checkpoint", 50)}
    cdf: dict[str, np.ndarray] = {}
    for name, (strategy, iv) in runs.items():
        say(f"A.3 latency: MazuNAT, {name}")
        cdf[name] = _latency_run(cfg, strategy, iv)
    base = float(np.median(cdf["none"])) if len(cdf["none"]) else 0.0
    out["a3"] = {name: _pcts(lat) | {"added_median_us": float(np.median(lat)) - base if len(lat) else None}
                 for name, lat in cdf.items()}
    out["_cdf"] = cdf
    # A.4: throughput
    a4: dict[str, Any] = {}
    for nf in cfg.nfs:
        say(f"A.4 throughput: {nf}, no FT and replay")
        none_pps = _throughput(cfg, nf, "none")
        replay_pps = _throughput(cfg, nf, "replay")
        a4[nf] = {"none_pps": none_pps, "replay_pps": replay_pps, "loss_pct": 100.0 * (1 - replay_pps / none_pps)}
    out["a4"] = a4
    # A.5: replay time by checkpoint interval
    a5: dict[str, Any] = {}
    for nf in cfg.nfs:
        a5[nf] = {}
        for iv in cfg.intervals_ms:
            say(f"A.5 replay time: {nf}, checkpoints every {iv} ms")
            packets = max(4 * cfg.batch, int(2.0 * iv / 1e3 * cfg.rate_pps))  # two intervals of packet time
            rs = _crash_trials(cfg, nf, "replay", cfg.replay_trials, packets, iv, rng)
            bad = [r for r in rs if not r.verdict.correct]
            if bad:
                raise RuntimeError(f"A.5 {nf} at {iv} ms: replay recovered incorrectly: {bad[0].verdict}")
            ms = [r.recovery.replay_s * 1e3 for r in rs]
            a5[nf][str(iv)] = {"replay_ms_mean": float(np.mean(ms)), "replay_ms_max": float(np.max(ms)),
                               "replayed_packets": [int(r.recovery.replayed_packets) for r in rs], "trials": len(rs)}
    out["a5"] = a5
    # Table 1: correctness by strategy, latency added
    t1: dict[str, Any] = {}
    for strategy in ("checkpoint", "buffer", "replay"):
        say(f"Table 1: MazuNAT, {strategy}, {cfg.table1_trials} random crashes")
        rs = _crash_trials(cfg, "mazunat", strategy, cfg.table1_trials, cfg.table1_packets, 50, rng)
        name = {"buffer": "buffer-50ms"}.get(strategy, strategy)
        t1[strategy] = {"correct": sum(r.verdict.correct for r in rs), "incorrect": sum(not r.verdict.correct for r in rs),
                        "trials": len(rs), "added_median_us": out["a3"][name]["added_median_us"]}
    out["table1"] = t1
    out["wall_s"] = time.perf_counter() - t_start
    say(f"done in {out['wall_s']:.1f} s")
    return out


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown_tables(out: dict[str, Any]) -> dict[str, str]:
    """Table 1, A.3, A.4 and A.5 as markdown, each with the study's figures beside ours."""
    s = STUDY
    t1 = ["| strategy | correct / trials (ours, oracle) | correctness (study) | median latency added (ours) "
          "| latency overhead (study) |", "|---|---|---|---|---|"]
    for k, v in out["table1"].items():
        t1.append(f"| {k} | {v['correct']} / {v['trials']} | {s['table1'][k]['correctness']} | "
                  f"{_f(v['added_median_us'], '.1f')} us | {s['table1'][k]['latency']} |")
    a3 = ["| run | p50 (us) | p90 (us) | p99 (us) | p99.9 (us) | median added (us) | study |", "|---|---|---|---|---|---|---|"]
    study_a3 = {"none": f"median ~{s['a3']['baseline_median_us']} us", "replay": f"+{s['a3']['replay_added_us']} us",
                "buffer-50ms": f"+{s['a3']['buffer_app_added_ms']} ms (application layer)",
                "buffer-200ms": f"{s['a3']['buffer_hypervisor_added_ms']} ms added (hypervisor)",
                "checkpoint": "-"}
    for k, v in out["a3"].items():
        a3.append(f"| {k} | {_f(v.get('p50_us'), '.0f')} | {_f(v.get('p90_us'), '.0f')} | {_f(v.get('p99_us'), '.0f')} "
                  f"| {_f(v.get('p999_us'), '.0f')} | {_f(v.get('added_median_us'), '.1f')} | {study_a3[k]} |")
    a4 = ["| middlebox | no FT (kpps) | replay (kpps) | loss (ours) | loss (study) |", "|---|---|---|---|---|"]
    for k, v in out["a4"].items():
        loss = s["a4"]["replay_loss_pct"].get(k)
        a4.append(f"| {k} | {v['none_pps'] / 1e3:.0f} | {v['replay_pps'] / 1e3:.0f} | {v['loss_pct']:.1f} % | "
                  f"{_f(loss, '.1f') + ' %' if loss is not None else '-'} |")
    a4.append("| wanopt | - | - | not measured (no recovery workload yet) | - |")
    a4.append(f"| (study) | baseline {s['a4']['baseline_mpps']} Mpps; buffering {s['a4']['buffering_kpps']} kpps | | | |")
    ivs = out["config"]["intervals_ms"]
    a5 = ["| middlebox | " + " | ".join(f"{i} ms" for i in ivs) + " |", "|---|" + "---|" * len(ivs)]
    for k, v in out["a5"].items():
        a5.append(f"| {k} | " + " | ".join(f"{v[str(i)]['replay_ms_mean']:.1f}" for i in ivs) + " |")
    a5.append("| (study, all six) | " + " | ".join(["" for _ in ivs[:-1]] + [f"{s['a5']['replay_ms_range']} ms overall"])
              + " |")
    src = "The study's figures: ETSI GS NFV-REL 002 V1.1.1, Table 1 and Annex A.2."
    return {"table1": "\n".join(t1) + f"\n\n{src}", "a3": "\n".join(a3) + f"\n\n{src}",
            "a4": "\n".join(a4) + f"\n\n{src}", "a5": "Replay time (ms, mean of the trials)\n\n" + "\n".join(a5)
            + f"\n\n{src}"}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_outputs(out: dict[str, Any], json_path: str | None, out_dir: str | None) -> list[Path]:
    """The JSON (at `json_path`) and, in `out_dir`, ``recovery_<part>.md`` and ``recovery_<part>.png``."""
    written: list[Path] = []
    if out_dir:
        from .recovery_plots import plot_recovery

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        for part, text in markdown_tables(out).items():
            p = d / f"recovery_{part}.md"
            p.write_text(text + "\n")
            written.append(p)
        written += plot_recovery(out, d)
    if json_path:
        p = Path(json_path)
        p.write_text(json.dumps({k: v for k, v in out.items() if not k.startswith("_")}, indent=2,
                                default=_json_default) + "\n")
        written.append(p)
    return written


def cli_main(args: Any) -> int:
    """``vnfkit experiment recovery`` (the CLI's hook)."""
    cfg = RecoveryConfig(seed=args.seed)
    if args.small:
        cfg = RecoveryConfig(rate_pps=20_000.0, latency_packets=3000, throughput_packets=3000, table1_trials=2,
                             table1_packets=3000, replay_trials=1, nfs=("mazunat", "monitor"), intervals_ms=(20, 50),
                             seed=args.seed)
    out = run_recovery(cfg, quiet=args.quiet)
    for text in markdown_tables(out).values():
        print(text + "\n")
    for p in write_outputs(out, args.json, args.out):
        print(f"wrote {p}", file=sys.stderr)
    return 0
