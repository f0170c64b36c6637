"""Live mode, in process: the same controller steering real packets between real VNF instances.

Packets come from the trace generator (:mod:`vnfkit.traffic`), are parsed and given a
direction-independent flow ID (symmetric Toeplitz hash: both directions of a connection hash
alike, so a reply falls in the same range as its request). Each batch goes through the hardware
switch model and the software switch of the server it lands on; each instance is a real
:class:`vnfkit.nfs.monitor.Monitor` with its own :class:`vnfkit.vnf.Context`, SharedState and
FlowTable, called through ``process()`` on the packets steered to it. Its FlowTable *is* the state
the software switch consults for Fold (``active_in_range``).

Affinity is checked packet by packet against the real tables: before an instance processes its
packets, no *other* instance may hold state for any of their flow keys; after it, it must hold state
for every one of them. The controller runs on trace time: one control tick per ``control_s``.

MazuNAT is not used here: its table entries carry flow_id 0 on this branch (so ``active_in_range``
cannot find them), and a reply's translated tuple would need the NAT to pick external ports whose
reply hashes into the same range (or the switches to steer replies by the mapping). The symmetric
flow ID solves the reply direction for VNFs that keep the original tuple, as Monitor does.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from ..classify import MultiQueueClassifier
from ..nfs.monitor import Monitor
from ..state import SharedState
from ..tables import NO_SLOT, NO_TARGET
from ..traffic import generate
from ..vnf import Context
from .controller import Controller, ControllerConfig
from .detector import DetectorConfig, OverloadDetector
from .placement import Placement
from .switches import HardwareSwitch, SoftwareSwitch


class LiveInstance:
    """A Monitor with its own Context and tables, on a server and core."""

    def __init__(self, instance_id: int, server: int, core: int, capacity_pps: float) -> None:
        self.id, self.server, self.core = instance_id, server, core
        self.capacity_pps = capacity_pps
        self.ctx = Context(0, 1, shared=SharedState(), logged=False)
        self.vnf = Monitor()
        self.vnf.setup(self.ctx, idle_timeout_s=0.3, tcp_close_timeout_s=0.1)
        self.offered = 0

    @property
    def flow_table(self) -> Any:
        return self.vnf.flows

    @property
    def queue_fill(self) -> float:
        return 0.0


def run_live(seed: int = 0, *, flows: int = 3000, packets: int = 300_000, rate_pps: float = 100_000.0,
             batch: int = 1000, capacity_pps: float = 70_000.0, control_s: float = 0.02,
             strategy: str = "avoid", quiet: bool = False) -> dict[str, Any]:
    """Run the trace through the switches and Monitor instances; returns the measurements."""
    t_wall = time.perf_counter()
    trace = generate(flows, packets, seed, rate_pps=rate_pps, mean_duration_s=0.4, duration_sigma=0.8)
    MultiQueueClassifier(1, symmetric=True).classify(trace)
    hw = HardwareSwitch(update_delay_s=0.002)
    sws = {s: SoftwareSwitch(s) for s in range(2)}
    ctrl = Controller(hw, sws, Placement(2, 1), lambda i, s, c: LiveInstance(i, s, c, capacity_pps),
                      ControllerConfig(strategy=strategy, threshold=50, cooldown_s=0.2),
                      OverloadDetector(DetectorConfig(window_s=0.1)))
    ctrl.bootstrap(0.0)
    violations = missing = processed = detoured = 0
    next_tick = control_s
    last_offered: dict[int, int] = {}
    loads: list[tuple[float, dict[int, int]]] = []
    ts = trace.ts_ns
    for start in range(0, len(trace), batch):
        idx = np.arange(start, min(start + batch, len(trace)), dtype=np.uint32)
        b = trace.select(idx)
        now = float(ts[idx[0]]) / 1e9
        while now >= next_tick:
            for iid, inst in ctrl.instances.items():
                ctrl.detector.report(iid, next_tick, control_s, inst.offered - last_offered.get(iid, 0), 0.0)
                last_offered[iid] = inst.offered
            loads.append((next_tick, {i: inst.offered for i, inst in ctrl.instances.items()}))
            ctrl.tick(next_tick)
            next_tick += control_s
        ctrl.on_batch(now)
        keys, fids = b.key, b.flow_id
        srv = hw.forward(keys, fids)
        target = np.full(len(b), NO_TARGET, dtype=np.uint32)
        for s, sw in sws.items():
            m = np.flatnonzero(srv == s)
            if len(m):
                target[m] = sw.forward(keys[m], fids[m])
        for iid, inst in list(ctrl.instances.items()):
            rows = np.flatnonzero(target == iid).astype(np.uint32)
            if not len(rows):
                continue
            if inst.server != -1:
                d = int((srv[rows] != inst.server).sum())
                detoured += d
                if d:
                    hw.count_pass(d, kind="detour")
            sub = b.select(rows)
            k = sub.key
            for jid, other in ctrl.instances.items():
                if jid != iid:
                    violations += int((other.flow_table.lookup(k) != NO_SLOT).sum())
            inst.vnf.process(sub, inst.ctx)
            missing += int((inst.flow_table.lookup(k) == NO_SLOT).sum())
            inst.offered += len(rows)
            processed += len(rows)
        violations += int((target == NO_TARGET).sum())
    res = {
        "mode": "live",
        "seed": seed,
        "vnf": "Monitor",
        "packets": len(trace),
        "processed": processed,
        "affinity_violations": violations,
        "state_missing_after_process": missing,
        "detoured_packets": detoured,
        "instances": sorted(ctrl.instances),
        "transfers": [{"kind": t.kind, "lo": t.lo, "hi": t.hi, "old_flows": t.fold,
                       "convergence_s": t.convergence_s, "phase": t.phase} for t in ctrl.transfers],
        "peak_hw_rules": hw.peak_rules,
        "peak_sw_rules": max(sw.peak_rules for sw in sws.values()),
        "hw_packets": hw.counters.packets,
        "events": [f"{t:.3f} s: {e}" for t, e in ctrl.events],
        "wall_s": time.perf_counter() - t_wall,
    }
    if not quiet:
        print(f"live: {processed} packets through {len(ctrl.instances)} Monitor instances, "
              f"{violations} affinity violations, {len(ctrl.transfers)} transfers", file=sys.stderr)
    return res


__all__ = ["LiveInstance", "run_live"]
