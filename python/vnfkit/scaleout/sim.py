"""A discrete-event simulation in virtual time, slot by slot, driving the real native tables and the
real controller.

Each slot (``slot_s``, 20 ms by default) is one vectorised batch: every active flow sends a Poisson
number of packets at its rate (one batch row per flow that sends, carrying its packet count, or with
``packet_rows=True`` one row per packet: the same outcome, slower); the batch goes through the hardware switch (``steer()`` on its range
and exception tables), then each server's software switch, then (detoured packets) back through the
hardware switch to the instance's server; each instance looks up or creates the state of every
packet's flow in its own FlowTable. Rule changes happen between slots.

Affinity is checked packet by packet: the simulator remembers which instance holds each flow's state
(set when an instance creates it, moved only when always-migrate's snapshot lands at the
destination, cleared when the flow ends and its entry is removed) and counts every packet steered
to any other instance, or to none, as a violation.

Latency is modelled, per packet, from measured and configured per-hop costs: each pass through a
switch costs the switch's measured time per packet in this run (wall-clock of its ``forward`` calls
divided by the packets), each link hop ``link_s`` (configured; default 0.5 us: serialisation of 84
bytes at 10 Gbps plus a few metres of cable), plus the instance's queueing delay (fluid queue: backlog
/ capacity) and its service time (1 / capacity). A detoured packet pays one more hardware pass, one
more software pass and two more link hops. Always-migrate's moved flows wait for the pause.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..tables import NO_TARGET
from .controller import Controller, ControllerConfig, Transfer
from .detector import DetectorConfig, OverloadDetector
from .instance import SimInstance
from .placement import Placement
from .switches import WIRE_BYTES_64B, HardwareSwitch, SoftwareSwitch
from .workload import Workload, draw_flows

MAX_INSTANCES = 16


@dataclass(frozen=True)
class SimConfig:
    slot_s: float = 0.02
    control_interval_s: float = 0.04
    servers: int = 2
    cores_per_server: int = 1
    instance_capacity_pps: float = 1.0e6
    queue_limit: int = 4096
    hw_capacity: int = 2048
    hw_update_delay_s: float = 0.005
    link_s: float = 0.5e-6
    record_every_s: float = 0.1
    #: one batch row per packet (True) or per flow with packets in the slot (False, the default:
    #: within a slot a flow's packets all meet the same rules, so the outcome is the same, and every
    #: packet is still counted, and checked, through its flow's row)
    packet_rows: bool = False
    progress: bool = False

    def validated(self) -> "SimConfig":
        for name in ("slot_s", "control_interval_s", "instance_capacity_pps", "record_every_s", "link_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
        for name in ("slot_s", "control_interval_s", "instance_capacity_pps", "record_every_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.link_s < 0:
            raise ValueError(f"link_s: must be >= 0, got {self.link_s}")
        if self.control_interval_s < self.slot_s or self.record_every_s < self.slot_s:
            raise ValueError("control_interval_s / record_every_s: must be at least one slot_s")
        if not 0 <= self.hw_update_delay_s < 60:
            raise ValueError(f"hw_update_delay_s: must be in [0, 60) s, got {self.hw_update_delay_s}")
        if self.servers * self.cores_per_server > MAX_INSTANCES:
            raise ValueError(f"servers x cores_per_server: at most {MAX_INSTANCES} instances")
        return self


@dataclass
class SimResult:
    """Time series (one row per ``record_every_s``) and totals of one run."""

    t_s: npt.NDArray[np.float64]
    load_pps: npt.NDArray[np.float64]  # [row, instance id]: packets/s offered to each instance
    latency_us: npt.NDArray[np.float64]  # mean per-packet latency
    detour_latency_us: npt.NDArray[np.float64]  # latency a detour adds to a packet (nan: none)
    hw_gbps: npt.NDArray[np.float64]  # hardware switch throughput (every pass counted)
    sw_gbps: npt.NDArray[np.float64]  # all software switches
    detour_pps: npt.NDArray[np.float64]
    hw_rules: npt.NDArray[np.int64]
    sw_rules: npt.NDArray[np.int64]
    packets: int = 0
    affinity_violations: int = 0
    state_misses: int = 0  # packets whose instance created a second copy of their flow's state
    unrouted: int = 0
    dropped: int = 0
    detoured: int = 0
    paused_packets: int = 0
    extra_latency_s: float = 0.0  # summed over detoured and paused packets
    affected_packets: int = 0
    wall_s: float = 0.0
    transfers: list[Transfer] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    peak_hw_rules: int = 0
    peak_sw_rules: int = 0
    hop_ns: dict[str, float] = field(default_factory=dict)
    flows: int = 0
    concurrent_flows_mean: float = 0.0

    def window_load(self, t0: float, t1: float) -> npt.NDArray[np.float64]:
        sel = (self.t_s > t0) & (self.t_s <= t1)
        return self.load_pps[sel].mean(axis=0) if sel.any() else np.zeros(self.load_pps.shape[1])


class Simulation:
    """The migration-avoidance experiment in virtual time: the workload's flows, time-slotted batches
    through the real switches, controller and instance tables, with a per-packet affinity check."""

    def __init__(self, workload: Workload | None = None, config: SimConfig | None = None,
                 controller: ControllerConfig | None = None, detector: DetectorConfig | None = None,
                 seed: int = 0) -> None:
        self.workload = (workload or Workload()).validated()
        self.config = (config or SimConfig()).validated()
        c = self.config
        self.flows = draw_flows(self.workload, seed)
        self.rng = np.random.default_rng(seed + 1)
        self.hw = HardwareSwitch(capacity=c.hw_capacity, update_delay_s=c.hw_update_delay_s)
        self.switches = {s: SoftwareSwitch(s) for s in range(c.servers)}
        self.placement = Placement(c.servers, c.cores_per_server)
        self.ctrl = Controller(self.hw, self.switches, self.placement, self._make_instance, controller,
                               OverloadDetector(detector))
        self.ctrl.on_migrate = self._migrated
        n = len(self.flows.start_s)
        #: instance holding each flow's state: -1 none yet, -2 ended
        self.owner = np.full(n, -1, dtype=np.int64)
        self._violations = 0

    def _make_instance(self, iid: int, server: int, core: int) -> SimInstance:
        if iid >= MAX_INSTANCES:
            raise ValueError(f"simulation: at most {MAX_INSTANCES} instances")
        return SimInstance(iid, server, core, capacity_pps=self.config.instance_capacity_pps,
                           queue_limit=self.config.queue_limit, flow_capacity=1 << 16)

    def _migrated(self, src: Any, dst: Any, dst_slots: npt.NDArray[np.uint32]) -> None:
        moved = dst.flow_table.values["flow"][dst_slots].astype(np.int64)
        self.owner[moved] = dst.id

    def run(self) -> SimResult:
        c, w, f = self.config, self.workload, self.flows
        ctrl, hw, sws = self.ctrl, self.hw, self.switches
        t_wall = time.perf_counter()
        ctrl.bootstrap(0.0)
        dt = c.slot_s
        nslots = int(round(w.duration_s / dt))
        per_ctl = max(1, int(round(c.control_interval_s / dt)))
        per_rec = max(1, int(round(c.record_every_s / dt)))
        nrec = nslots // per_rec
        ser = np.zeros((nrec, MAX_INSTANCES), np.float64)
        lat, dlat, hwg, swg, dpps = (np.zeros(nrec, np.float64) for _ in range(5))
        hwr, swr = np.zeros(nrec, np.int64), np.zeros(nrec, np.int64)
        res = SimResult(np.arange(1, nrec + 1, dtype=np.float64) * np.float64(c.record_every_s), ser, lat, dlat, hwg, swg, dpps, hwr, swr)
        key_dtype = f.keys.dtype
        kv = f.keys.view(np.dtype((np.void, key_dtype.itemsize)))
        alive = np.zeros(len(f.start_s), dtype=bool)
        end_order = np.argsort(f.end_s, kind="stable")
        started = ended = 0
        offered_at_tick = np.zeros(MAX_INSTANCES, dtype=np.int64)
        hop_t = {"hw": 0.0, "sw": 0.0}
        hop_n = {"hw": 0, "sw": 0}
        acc = np.zeros(MAX_INSTANCES)
        acc_lat = acc_dlat = 0.0
        acc_n = acc_d = 0
        hw_b0 = sw_b0 = 0
        conc = 0
        inst_server = np.full(MAX_INSTANCES + 1, -1, dtype=np.int64)
        for k in range(nslots):
            t = k * dt
            ctrl.on_batch(t)
            while started < len(f.start_s) and f.start_s[started] < t + dt:
                alive[started] = True
                started += 1
            ended = self._end_flows(t, end_order, ended, alive)
            active = np.flatnonzero(alive[:started])
            conc += len(active)
            counts = self.rng.poisson(f.rate_pps[active] * (dt * w.multiplier(t)))
            if c.packet_rows:
                pk = np.repeat(active, counts)
                cnt = np.ones(len(pk), dtype=np.int64)
            else:  # one row per flow with packets: its packets in this slot all meet the same rules
                sel = counts > 0
                pk, cnt = active[sel], counts[sel]
            n = int(cnt.sum())
            res.packets += n
            keys, fids = kv[pk].view(key_dtype), f.flow_ids[pk]  # a void-view gather: ~7x faster
            wire = cnt * WIRE_BYTES_64B
            t0 = time.perf_counter()
            srv = hw.forward(keys, fids, wire, packets=n)
            hop_t["hw"] += time.perf_counter() - t0
            hop_n["hw"] += n
            target = np.full(len(pk), NO_TARGET, dtype=np.uint32)
            for s, sw in sws.items():
                m = np.flatnonzero(srv == s)
                if len(m):
                    t0 = time.perf_counter()
                    target[m] = sw.forward(keys[m], fids[m], wire[m], packets=int(cnt[m].sum()), weights=cnt[m])
                    hop_t["sw"] += time.perf_counter() - t0
                    hop_n["sw"] += int(cnt[m].sum())
            inst_server[:] = -1
            for iid, inst in ctrl.instances.items():
                inst_server[iid] = inst.server
            routed = target != NO_TARGET
            res.unrouted += int(cnt[~routed].sum())
            tserver = np.where(routed, inst_server[np.minimum(target, MAX_INSTANCES)], -1)
            detour = routed & (tserver != srv)
            nd = int(cnt[detour].sum())
            if nd:
                hw.count_pass(nd, nd * WIRE_BYTES_64B, kind="detour")
                for s in np.unique(tserver[detour]):
                    dm = detour & (tserver == s)
                    sws[int(s)].count_pass(int(cnt[dm].sum()), int(cnt[dm].sum()) * WIRE_BYTES_64B, kind="detour")
            res.detoured += nd
            ts_ns = int(t * 1e9)
            path = self._path_s(hop_t, hop_n)
            slot_lat = 0.0
            for iid, inst in ctrl.instances.items():
                m = np.flatnonzero(target == iid)
                if not len(m):
                    inst.serve(0, dt)
                    continue
                pm, cm = pk[m], cnt[m]
                own = self.owner[pm]
                bad = (own != -1) & (own != iid)
                self._violations += int(cm[bad].sum())
                slots, is_new = inst.receive(keys[m], fids[m], pm.astype(np.uint32), ts_ns, packets=cm)
                res.state_misses += int(cm[is_new & (own != -1)].sum())
                newf = pm[is_new]
                self.owner[newf[self.owner[newf] == -1]] = iid
                arrivals = int(cm.sum())
                qdelay = inst.serve(arrivals, dt)
                acc[iid] += arrivals
                slot_lat += arrivals * (path + qdelay + 1.0 / inst.capacity_pps)
            paused0 = res.paused_packets
            pause = self._pause_extra(t, pk[routed], cnt[routed], res)
            acc_lat += slot_lat + nd * path + pause
            acc_n += n
            res.extra_latency_s += nd * path + pause
            res.affected_packets += nd + res.paused_packets - paused0
            if nd:
                acc_dlat += nd * path
                acc_d += nd
            if (k + 1) % per_ctl == 0:
                self._control(t + dt, offered_at_tick, per_ctl * dt)
            if (k + 1) % per_rec == 0:
                r = (k + 1) // per_rec - 1
                span = per_rec * dt
                ser[r] = acc / span
                lat[r] = acc_lat / max(acc_n, 1) * 1e6
                dlat[r] = acc_dlat / acc_d * 1e6 if acc_d else np.nan
                hwg[r] = (hw.counters.bytes - hw_b0) * 8 / span / 1e9
                swb = sum(sw.counters.bytes for sw in sws.values())
                swg[r] = (swb - sw_b0) * 8 / span / 1e9
                dpps[r] = acc_d / span
                hwr[r] = hw.rules
                swr[r] = sum(sw.rules for sw in sws.values())
                hw_b0, sw_b0 = hw.counters.bytes, swb
                acc[:] = 0
                acc_lat = acc_dlat = 0.0
                acc_n = acc_d = 0
                if c.progress and r % 50 == 49:
                    print(f"  sim t={t + dt:5.1f} s  {res.packets / 1e6:6.1f} M packets  "
                          f"{time.perf_counter() - t_wall:5.1f} s wall", file=sys.stderr)
        res.wall_s = time.perf_counter() - t_wall
        res.affinity_violations = self._violations
        res.dropped = sum(i.dropped for i in ctrl.instances.values())
        res.transfers = list(ctrl.transfers)
        res.events = list(ctrl.events)
        res.peak_hw_rules = hw.peak_rules
        res.peak_sw_rules = max(sw.peak_rules for sw in sws.values())
        res.hop_ns = {h: hop_t[h] / max(hop_n[h], 1) * 1e9 for h in hop_t}
        res.hop_ns["link"] = c.link_s * 1e9
        res.flows = started
        res.concurrent_flows_mean = conc / max(nslots, 1)
        return res

    def _path_s(self, hop_t: dict[str, float], hop_n: dict[str, int]) -> float:
        """One pass: hardware switch + software switch + two link hops (measured so far)."""
        hw = hop_t["hw"] / max(hop_n["hw"], 1)
        sw = hop_t["sw"] / max(hop_n["sw"], 1)
        return hw + sw + 2 * self.config.link_s

    def _pause_extra(self, t: float, pk: npt.NDArray[np.int64], cnt: npt.NDArray[np.int64], res: SimResult) -> float:
        """Always-migrate: packets of moved flows arriving during the pause wait for its end."""
        extra = 0.0
        for tr in self.ctrl.transfers:
            if tr.pause_s > 0 and tr.started_s <= t < tr.started_s + tr.pause_s:
                fid = self.flows.flow_ids[pk]
                n = int(cnt[(fid >= tr.lo) & (fid <= tr.hi) & (self.flows.start_s[pk] < tr.started_s)].sum())
                res.paused_packets += n
                extra += n * (tr.started_s + tr.pause_s - t)
        return extra

    def _end_flows(self, t: float, end_order: npt.NDArray[np.int64], ended: int, alive: npt.NDArray[np.bool_]) -> int:
        f = self.flows
        j = ended
        while j < len(end_order) and f.end_s[end_order[j]] <= t:
            j += 1
        if j == ended:
            return ended
        gone = end_order[ended:j]
        gone = gone[alive[gone]]
        alive[gone] = False
        own = self.owner[gone]
        for iid, inst in self.ctrl.instances.items():
            sel = gone[own == iid]
            if len(sel):
                inst.flow_table.remove(f.keys[sel])  # the flow's FIN: its state goes away
        self.owner[gone] = -2
        return j

    def _control(self, now: float, offered_at_tick: npt.NDArray[np.int64], interval: float) -> None:
        for iid, inst in self.ctrl.instances.items():
            self.ctrl.detector.report(iid, now, interval, inst.offered - int(offered_at_tick[iid]), inst.queue_fill)
            offered_at_tick[iid] = inst.offered
        self.ctrl.tick(now)
        for iid in range(MAX_INSTANCES):
            if iid not in self.ctrl.instances:
                offered_at_tick[iid] = 0


__all__ = ["MAX_INSTANCES", "SimConfig", "SimResult", "Simulation"]
