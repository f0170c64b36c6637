"""The scale-out experiment: migration avoidance against never-migrate and always-migrate.

``run_scale(mode="sim")`` runs the study's workload (see :mod:`vnfkit.scaleout.workload`) once per
strategy, with the same seed (so the same flows and packets), on one overloaded instance A whose
capacity is below the offered load and one spare server for A'. The detector triggers the split;
everything after that is measured:

* ``imbalance`` -- ``|load(A) - load(A')| / mean`` over the last ``window_s`` seconds of the run
  (after convergence; a fraction);
* ``convergence_s`` -- from the split until the hardware switch has taken over the moved range;
* ``peak_hw_rules`` / ``peak_sw_rules`` -- most rules ever installed in the hardware switch / in
  one software switch; ``hw_rules_needed`` -- what never-migrate's balanced split would have needed;
* ``affinity_violations`` -- packets that reached an instance without their flow's state;
* ``state_bytes_moved`` / ``pause_ms`` -- always-migrate's snapshot image and pause;
* ``added_latency_us`` -- mean latency added to the packets a transfer touched (detoured or paused),
  from the latency model of :mod:`vnfkit.scaleout.sim`; ``detour_gbps_peak`` -- the extra hardware
  switch bandwidth of the detour at its worst (100 ms average).

A second scenario, ``elastic``, changes the offered load (x1, x1.8, x0.4) on four servers so that the
controller splits twice (A -> A, A', A'') and scales in, all under the same affinity check.
"""

from __future__ import annotations

import json
import math
import sys
import time

from pathlib import Path
from typing import Any

import numpy as np

from ..scaleout.controller import ControllerConfig
from ..scaleout.sim import SimConfig, SimResult, Simulation
from ..scaleout.workload import Workload

STRATEGIES = {
    "migration-avoidance": ControllerConfig(strategy="avoid"),
    "never-migrate": ControllerConfig(strategy="never"),
    "always-migrate": ControllerConfig(strategy="always"),
}


def summarize(res: SimResult, window_s: float | None = None) -> dict[str, Any]:
    """The per-strategy row of the table / JSON; imbalance over the last ``window_s`` (default: the
    last 10 s, or the last third of a shorter run)."""
    end = float(res.t_s[-1]) if len(res.t_s) else 0.0
    if window_s is None:
        window_s = min(10.0, end / 3)
    load = res.window_load(end - window_s, end)
    first = res.transfers[0] if res.transfers else None
    a, b = (load[first.src], load[first.dst]) if first else (float(load[0]), 0.0)
    mean = (a + b) / 2
    detour_gbps = res.detour_pps * 84 * 8 / 1e9
    return {
        "imbalance": abs(a - b) / mean if mean else None,
        "imbalance_window_s": window_s,
        "load_a_pps": a,
        "load_a2_pps": b,
        "convergence_s": first.convergence_s if first else None,
        "split_at_s": first.started_s if first else None,
        "split_m": first.lo if first else None,
        "split_fraction": (first.lo / 2 ** 32) if first else None,
        "old_flows": first.fold if first else 0,
        "peak_hw_rules": res.peak_hw_rules,
        "peak_sw_rules": res.peak_sw_rules,
        "hw_rules_needed": max([t.rules_needed for t in res.transfers] or [0]),
        "affinity_violations": res.affinity_violations,
        "state_misses": res.state_misses,
        "unrouted_packets": res.unrouted,
        "state_bytes_moved": sum(t.state_bytes_moved for t in res.transfers),
        "flows_moved": sum(t.flows_moved for t in res.transfers),
        "pause_ms": max([t.pause_s for t in res.transfers] or [0.0]) * 1e3,
        "added_latency_us": res.extra_latency_s / res.affected_packets * 1e6 if res.affected_packets else 0.0,
        "detoured_packets": res.detoured,
        "paused_packets": res.paused_packets,
        "detour_gbps_peak": float(detour_gbps.max()) if len(detour_gbps) else 0.0,
        "dropped_packets": res.dropped,
        "packets": res.packets,
        "transfers": len(res.transfers),
        "hop_ns": res.hop_ns,
        "wall_s": res.wall_s,
    }


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_scale(mode: str = "sim", seed: int = 0, *, duration_s: float = 30.0, quiet: bool = False,
              elastic: bool = True, strategies: tuple[str, ...] = tuple(STRATEGIES),
              switch: str = "model") -> dict[str, Any]:
    """Run every strategy (and the elastic scenario); returns ``{"strategies": {...}, ...}`` with
    the raw results under ``"_results"`` (not JSON). ``switch="ovs"`` (live mode only): the
    hardware switch is a real Open vSwitch bridge (:func:`run_live_ovs`)."""
    if mode not in ("sim", "live"):
        raise ValueError(f"mode: expected 'sim' or 'live', got {mode!r}")
    if switch not in ("model", "ovs"):
        raise ValueError(f"switch: expected 'model' or 'ovs', got {switch!r}")
    if switch == "ovs" and mode != "live":
        raise ValueError("switch: 'ovs' needs --mode live (the simulation runs on the switch model)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"strategies: unknown {unknown}; known: {list(STRATEGIES)}")
    if switch == "ovs":
        return run_scale_ovs(seed, duration_s=duration_s, quiet=quiet, strategies=strategies)
    if mode == "live":
        from ..scaleout.live import run_live

        return run_live(seed=seed, quiet=quiet)
    w = Workload(duration_s=duration_s)
    out: dict[str, Any] = {"mode": mode, "seed": seed, "workload": _workload_info(w), "strategies": {},
                           "_results": {}}
    for name in strategies:
        _progress(f"scale: {name}, {duration_s:g} simulated s ...", quiet)
        t0 = time.perf_counter()
        sim = Simulation(w, SimConfig(progress=not quiet), STRATEGIES[name], seed=seed)
        res = sim.run()
        out["strategies"][name] = summarize(res)
        out["_results"][name] = res
        _progress(f"scale: {name} done in {time.perf_counter() - t0:.1f} s wall", quiet)
    if elastic:
        _progress(f"scale: elastic scenario (split, second split, scale-in), {duration_s:g} simulated s ...", quiet)
        res = run_elastic(seed, duration_s=duration_s, progress=not quiet)
        out["elastic"] = {
            "affinity_violations": res.affinity_violations,
            "state_misses": res.state_misses,
            "splits": sum(t.kind == "split" for t in res.transfers),
            "merges": sum(t.kind == "merge" for t in res.transfers),
            "peak_hw_rules": res.peak_hw_rules,
            "events": [f"{t:.2f} s: {e}" for t, e in res.events],
        }
        out["_results"]["elastic"] = res
    return out


#: the OVS live run's trace: packets and new flows per second of trace time (a reduced rate: every
#: packet crosses Python sockets; the study's 1.49 Mpps is the simulation's)
OVS_RATE_PPS = 20_000.0
OVS_FLOWS_PER_S = 1_000.0


def run_scale_ovs(seed: int = 0, *, duration_s: float = 2.0, quiet: bool = False,
                 strategies: tuple[str, ...] = tuple(STRATEGIES)) -> dict[str, Any]:
    """Every strategy through a real Open vSwitch bridge (one testbed, a fresh rule set per
    strategy), ``duration_s`` seconds of trace each at :data:`OVS_RATE_PPS`. The per-strategy rows
    have the simulation's fields (``imbalance`` etc.; ``peak_hw_rules`` is read from OVS) plus the
    live run's checks (lost packets, OVS/model mismatches, OVS update times)."""
    from ..scaleout.ovs_live import run_live_ovs as run_one
    from ..scaleout.ovs_testbed import OvsTopology
    from ..testbed.ovs import OvsError, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise OvsError(f"--switch ovs: {reason}")
    packets = int(duration_s * OVS_RATE_PPS)
    flows = max(1, int(duration_s * OVS_FLOWS_PER_S))
    out: dict[str, Any] = {"mode": "live", "switch": "ovs", "seed": seed,
                           "workload": {"packets": packets, "flows": flows, "rate_pps": OVS_RATE_PPS,
                                        "duration_s": duration_s, "vnf": "Monitor"},
                           "strategies": {}}
    with OvsTopology(2) as topo:
        for name in strategies:
            _progress(f"scale (live, OVS): {name}, {packets} packets ...", quiet)
            row = run_one(seed, strategy=STRATEGIES[name].strategy, flows=flows, packets=packets,
                          rate_pps=OVS_RATE_PPS, topology=topo, quiet=True)
            row.pop("mode", None)
            row.pop("switch", None)
            out["strategies"][name] = row
            _progress(f"scale (live, OVS): {name}: {row['affinity_violations']} affinity violations, peak "
                      f"{row['peak_hw_rules']} OVS flows, {row['wall_s']:.1f} s wall", quiet)
    return out


def run_elastic(seed: int = 0, *, duration_s: float = 30.0, progress: bool = False) -> SimResult:
    """Offered load x1, then x1.8 from a third of the run, then x0.4 from two thirds, on 4 servers."""
    d = duration_s
    w = Workload(duration_s=d, rate_profile=((d / 3, 1.8), (2 * d / 3, 0.4)))
    cfg = SimConfig(servers=4, progress=progress)
    ctrl = ControllerConfig(strategy="avoid", cooldown_s=0.5)
    return Simulation(w, cfg, ctrl, seed=seed).run()


def _workload_info(w: Workload) -> dict[str, Any]:
    return {
        "new_flows_per_s": w.new_flows_per_s,
        "packet_rate_pps": w.packet_rate_pps,
        "mean_lifetime_s": w.mean_lifetime_s,
        "concurrent_flows": w.concurrent_flows,
        "lifetimes": f"{1 - w.tail_weight:.3%} lognormal(median {w.body_median_s} s, sigma {w.body_sigma}) + "
                     f"{w.tail_weight:.1%} Pareto(alpha {w.tail_alpha}, from {w.tail_min_s} s)",
        "per_flow_rate": f"lognormal, sigma {w.rate_sigma}, mean {w.mean_flow_pps:.0f} pps",
        "duration_s": w.duration_s,
    }


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def markdown_table(out: dict[str, Any]) -> str:
    """The comparison of the strategies in `out` (the experiment's JSON) as a markdown table."""
    rows = [
        ("imbalance after convergence", "imbalance", lambda v: _fmt(v * 100 if v is not None else None, ".1f") + " %"),
        ("convergence (s)", "convergence_s", lambda v: _fmt(v, ".2f")),
        ("split point M (fraction of the space)", "split_fraction", lambda v: _fmt(v, ".3f")),
        ("peak hardware rules (capacity 2 048)", "peak_hw_rules", lambda v: _fmt(v, "d")),
        ("hardware rules a balanced split needs", "hw_rules_needed", lambda v: _fmt(v, "d") if v else "-"),
        ("peak software rules (one switch)", "peak_sw_rules", lambda v: _fmt(v, "d")),
        ("state moved (bytes)", "state_bytes_moved", lambda v: _fmt(v, ",d")),
        ("pause (ms)", "pause_ms", lambda v: _fmt(v, ".2f")),
        ("added latency of affected packets (us)", "added_latency_us", lambda v: _fmt(v, ".2f")),
        ("detoured packets", "detoured_packets", lambda v: _fmt(v, ",d")),
        ("peak detour bandwidth (Gbps)", "detour_gbps_peak", lambda v: _fmt(v, ".3f")),
        ("packets that reached the wrong instance", "affinity_violations", lambda v: _fmt(v, ",d")),
        ("packets", "packets", lambda v: _fmt(v, ",d")),
    ]
    names = list(out["strategies"])
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(out["strategies"][n][key]) for n in names) + " |")
    return "\n".join(lines)


def write_outputs(out: dict[str, Any], json_path: str | None, out_dir: str | None) -> list[Path]:
    """The JSON (``json_path``) and, in ``out_dir``, the figures and ``scale_table.md``.
    Files are written only at the paths given (the figures and table under fixed names in ``out_dir``)."""
    written: list[Path] = []
    public = {k: v for k, v in out.items() if not k.startswith("_")}
    if out_dir:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        if "strategies" in out:
            (d / "scale_table.md").write_text(markdown_table(out) + "\n")
            written.append(d / "scale_table.md")
        if "_results" in out:
            from .plots import plot_scale

            written += plot_scale(out, d)
    if json_path:
        p = Path(json_path)
        p.write_text(json.dumps(public, indent=2, default=_json_default) + "\n")
        written.append(p)
    return written


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cli_main(args: Any) -> int:
    """``vnfkit experiment scale`` (the CLI's hook)."""
    switch = getattr(args, "switch", "model")
    duration = args.duration
    if switch == "ovs" and duration is None:
        duration = 2.0
    out = run_scale(args.mode, args.seed, duration_s=30.0 if duration is None else duration, quiet=args.quiet,
                    switch=switch)
    if "strategies" in out:
        print(markdown_table(out))
        if "elastic" in out:
            e = out["elastic"]
            print(f"\nelastic scenario: {e['splits']} splits, {e['merges']} scale-ins, "
                  f"{e['affinity_violations']} affinity violations, peak hardware rules {e['peak_hw_rules']}")
    else:
        print(json.dumps({k: v for k, v in out.items() if not k.startswith("_")}, indent=2, default=_json_default))
    for p in write_outputs(out, args.json, args.out):
        print(f"wrote {p}", file=sys.stderr)
    return 0


__all__ = ["OVS_FLOWS_PER_S", "OVS_RATE_PPS", "STRATEGIES", "cli_main", "markdown_table", "run_elastic",
           "run_scale", "run_scale_ovs", "summarize", "write_outputs"]

