"""Live scale-out through Open vSwitch: real packets, a real OVS bridge as the hardware switch.

:func:`run_live_ovs` builds an :class:`~vnfkit.scaleout.ovs_testbed.OvsTopology` (a client and two
server namespaces joined by veth pairs to our own OVS bridge), puts an
:class:`~vnfkit.scaleout.ovs_switch.OvsHardwareSwitch` under the unchanged
:class:`~vnfkit.scaleout.controller.Controller`, and plays a generated trace through it:

* The client sends every packet with ``AF_PACKET`` on its veth, paced: ``burst`` packets, then it
  waits until they have all arrived (so no socket overflows; the wall-clock rate is reported). Each
  frame carries a marker and its trace index in its last 10 payload bytes (checksums fixed), so
  every received frame is matched to exactly one sent packet.
* OVS steers each packet by its rules (ranges on the bit-reversed ``nw_src``, exact-match
  exceptions) to a server's port. Each server reads its port with its own ``AF_PACKET`` socket; its
  software switch (:class:`~vnfkit.scaleout.switches.SoftwareSwitch`) picks the instance. A packet
  for an instance on another server is a *detour*: the server sends it back into the bridge with
  that server's MAC as destination (a fixed OVS flow per server forwards by ``dl_dst``), and that
  server's software switch delivers it.
* The instances A and A' are :class:`~vnfkit.scaleout.live.LiveInstance` (a real Monitor with its
  own tables). Affinity is checked packet by packet as in the in-process live mode: before an
  instance processes a packet no other instance may hold its flow's state, and after it, it must.
  Every packet that arrives at a server is also checked against the hardware-switch *model*
  (:meth:`HardwareSwitch.forward`): OVS and the model must agree on every packet.
* The controller runs on trace time (one tick per ``control_s``); rule updates are applied between
  batches, each as one atomic OpenFlow bundle, and the OVS rule count is read back after each.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from ..packets import PacketBatch
from ..tables import NO_SLOT, NO_TARGET
from ..traffic import generate
from .controller import Controller, ControllerConfig
from .detector import DetectorConfig, OverloadDetector
from .live import LiveInstance
from .ovs_switch import OvsHardwareSwitch, flow_ids_for
from .ovs_testbed import PACKET_OUTGOING, OvsTopology
from .placement import Placement
from .switches import SoftwareSwitch

MARK = b"VKOV"
STAMP_BYTES = 10  # marker (4) + trace index (6, little endian)
DETOUR_PRIORITY = 3000


def stamp(batch: PacketBatch) -> None:
    """Write the marker and each packet's index into its last 10 bytes (payload) and fix checksums."""
    ends = batch.offsets[1:].astype(np.int64)
    data = batch.data
    idx = np.arange(len(batch), dtype="<u8").view(np.uint8).reshape(-1, 8)
    for j, c in enumerate(MARK):
        data[ends - STAMP_BYTES + j] = c
    for j in range(6):
        data[ends - 6 + j] = idx[:, j]
    batch.fix_checksums()


def _check_stampable(batch: PacketBatch) -> None:
    room = batch.offsets[1:].astype(np.int64) - batch.offsets[:-1] - batch.l4_offset - np.where(
        batch.key["proto"] == 6, 20, 8)
    if len(batch) and (room < STAMP_BYTES).any():
        raise ValueError(f"trace: every packet needs {STAMP_BYTES} payload bytes for the index stamp")


class _Server:
    """One server host: its socket, its software switch, its instances."""

    def __init__(self, sid: int, sock: Any, sw: SoftwareSwitch, mac: bytes) -> None:
        self.id, self.sock, self.sw, self.mac = sid, sock, sw, mac

    def receive(self) -> list[bytes]:
        out = []
        try:
            while True:
                d, addr = self.sock.recvfrom(4096)
                if addr[2] != PACKET_OUTGOING:
                    out.append(d)
        except BlockingIOError:
            pass
        return out


def run_live_ovs(seed: int = 0, *, strategy: str = "avoid", flows: int = 2000, packets: int = 40_000,
                 rate_pps: float = 20_000.0, batch: int = 200, burst: int = 32, capacity_pps: float = 14_000.0,
                 control_s: float = 0.02, threshold: int = 50, mean_duration_s: float = 0.4,
                 wait_s: float = 0.5, hw_capacity: int = 2048, datapath_sync: str = "purge", quiet: bool = False,
                 topology: OvsTopology | None = None) -> dict[str, Any]:
    """Play the trace through OVS with the controller's ``strategy``; returns the measurements.
    ``rate_pps`` is the trace's (virtual) rate; the wall-clock rate is whatever pacing allows.
    ``hw_capacity``: the OpenFlow entries the controller may use in the bridge (the study's 2 048).
    ``datapath_sync``: see :class:`OvsHardwareSwitch` (``"none"`` lets stale cached flows race).
    ``topology``: an open :class:`OvsTopology` with two servers to reuse (default: one of its own)."""
    for name, v, lo in (("flows", flows, 1), ("packets", packets, 1), ("batch", batch, 1), ("burst", burst, 1),
                        ("hw_capacity", hw_capacity, 1), ("threshold", threshold, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    reals: tuple[tuple[str, float], ...] = (("rate_pps", rate_pps), ("capacity_pps", capacity_pps),
                                            ("control_s", control_s), ("wait_s", wait_s))
    for rname, rv in reals:
        if isinstance(rv, bool) or not isinstance(rv, (int, float)) or not rv > 0:
            raise ValueError(f"{rname}: expected a positive number, got {rv!r}")
    ControllerConfig(strategy=strategy, threshold=threshold).validated()  # names the bad field
    if packets < flows:
        raise ValueError(f"packets: must be >= flows ({flows}), got {packets}")
    if threshold > hw_capacity:
        raise ValueError(f"threshold: T={threshold} exceeds hw_capacity={hw_capacity}")
    if topology is None:
        with OvsTopology(2) as topo:
            return run_live_ovs(seed, strategy=strategy, flows=flows, packets=packets, rate_pps=rate_pps,
                                batch=batch, burst=burst, capacity_pps=capacity_pps, control_s=control_s,
                                threshold=threshold, mean_duration_s=mean_duration_s, wait_s=wait_s,
                                hw_capacity=hw_capacity, datapath_sync=datapath_sync, quiet=quiet, topology=topo)
    return _run(topology, seed, strategy, flows, packets, rate_pps, batch, burst, capacity_pps, control_s,
                threshold, mean_duration_s, wait_s, hw_capacity, datapath_sync, quiet)


def _run(topo: OvsTopology, seed: int, strategy: str, flows: int, packets: int, rate_pps: float, batch: int,
         burst: int, capacity_pps: float, control_s: float, threshold: int, mean_duration_s: float,
         wait_s: float, hw_capacity: int, datapath_sync: str, quiet: bool) -> dict[str, Any]:
    t_wall = time.perf_counter()
    trace = generate(flows, packets, seed, rate_pps=rate_pps, mean_duration_s=mean_duration_s,
                     duration_sigma=0.8, udp_fraction=0.5)
    trace.parse()
    _check_stampable(trace)
    stamp(trace)
    fids = flow_ids_for(trace.key)
    _, flow_of = np.unique(trace.key.view(f"V{trace.key.dtype.itemsize}"), return_inverse=True)
    ts = trace.ts_ns
    frames = trace.to_list()
    if any(f[:6] in topo.host_mac.values() for f in frames[:1]):
        raise ValueError("trace: its destination MAC is a server's (the detour flows would catch it)")

    fixed = [f"priority={DETOUR_PRIORITY},dl_dst={':'.join(f'{b:02x}' for b in topo.host_mac[s])},"
             f"actions=output:{topo.server_ports[s]}" for s in topo.server_ports]
    hw = OvsHardwareSwitch(topo.ovs, topo.bridge, topo.server_ports, fixed_flows=fixed,  # type: ignore[arg-type]
                           capacity=hw_capacity, datapath_sync=datapath_sync)
    sws = {s: SoftwareSwitch(s) for s in topo.server_ports}
    ctrl = Controller(hw, sws, Placement(len(sws), 1), lambda i, s, c: LiveInstance(i, s, c, capacity_pps),
                      ControllerConfig(strategy=strategy, threshold=threshold, cooldown_s=0.2),
                      OverloadDetector(DetectorConfig(window_s=0.1)))
    ctrl.bootstrap(0.0)
    ports_before = hw.port_packets()
    client = topo.socket("client")
    servers = {s: _Server(s, topo.socket(s), sws[s], topo.host_mac[s]) for s in sws}
    mac_to_server = {sv.mac: s for s, sv in servers.items()}
    c: dict[str, Any] = {"violations": 0, "missing": 0, "processed": 0, "detoured": 0, "lost": 0, "duplicates": 0,
         "foreign": 0, "model_mismatch": 0, "unrouted": 0, "burst": burst, "wait_s": wait_s}
    where = np.full(len(trace), -1, dtype=np.int64)  # instance that processed each packet
    seen = np.zeros(len(trace), dtype=bool)
    load_log: list[tuple[float, dict[int, int]]] = []
    next_tick = control_s
    last_offered: dict[int, int] = {}
    try:
        for start in range(0, len(trace), batch):
            stop = min(start + batch, len(trace))
            now = float(ts[start]) / 1e9
            while now >= next_tick:
                for iid, inst in ctrl.instances.items():
                    ctrl.detector.report(iid, next_tick, control_s, inst.offered - last_offered.get(iid, 0), 0.0)
                    last_offered[iid] = inst.offered
                load_log.append((next_tick, {i: inst.offered for i, inst in ctrl.instances.items()}))
                ctrl.tick(next_tick)
                next_tick += control_s
                if ctrl.transfers and "split_index" not in c:
                    c["split_index"] = start  # the first packet sent after the first split
                    fold = ctrl.transfers[0].exceptions  # Fold(A): the old flows A keeps (not with always)
                    c["fold_keys"] = {k.tobytes() for k in fold}
            ctrl.on_batch(now)
            arrived = _send_batch(client, frames, start, stop, burst, servers, seen, c, wait_s)
            _deliver(arrived, trace, fids, ts, servers, mac_to_server, ctrl, hw, where, c)
        c["lost"] = int((~seen).sum())
        ports_after = hw.port_packets()
        c["ovs_rx"] = sum(rx - ports_before.get(p, (0, 0))[0] for p, (rx, _) in ports_after.items())
        c["ovs_tx"] = sum(tx - ports_before.get(p, (0, 0))[1] for p, (_, tx) in ports_after.items())
    finally:
        client.close()
        for sv in servers.values():
            sv.sock.close()
    wall = time.perf_counter() - t_wall
    res = _summary(trace, fids, flow_of, ts, where, ctrl, hw, sws, load_log, c, wall, strategy, seed)
    if not quiet:
        print(f"live/ovs {strategy}: {c['processed']} packets through OVS to {len(ctrl.instances)} Monitor "
              f"instances, {c['violations']} affinity violations, peak {hw.peak_ovs_rules} OVS flows "
              f"(read from OVS), {c['lost']} lost, {res['wall_pps']:.0f} pps wall", file=sys.stderr)
    return res


def _send_batch(client: Any, frames: list[bytes], start: int, stop: int, burst: int, servers: dict[int, _Server],
                seen: npt.NDArray[np.bool_], c: dict[str, Any], wait_s: float) -> dict[int, list[int]]:
    """Send frames[start:stop] in bursts, collect what arrives at each server: {server: [index]}."""
    arrived: dict[int, list[int]] = {s: [] for s in servers}
    got = 0
    for b0 in range(start, stop, burst):
        b1 = min(b0 + burst, stop)
        for i in range(b0, b1):
            client.send(frames[i])
        deadline = time.monotonic() + wait_s
        while got < b1 - start and time.monotonic() < deadline:
            got += _collect(servers, arrived, seen, c, start, stop)
            if got < b1 - start:
                time.sleep(0.0002)

    return arrived


def _collect(servers: dict[int, _Server], arrived: dict[int, list[int]], seen: npt.NDArray[np.bool_],
             c: dict[str, Any], start: int, stop: int) -> int:
    n = 0
    for s, sv in servers.items():
        for d in sv.receive():
            i = _index(d)
            if i is None or not start <= i < stop:
                c["foreign"] += 1  # not a frame of this batch: counted and dropped
                continue
            if seen[i]:
                c["duplicates"] += 1
                continue
            seen[i] = True
            arrived[s].append(i)
            n += 1
    return n


def _index(d: bytes) -> int | None:
    if len(d) < 14 + STAMP_BYTES or d[-STAMP_BYTES:-6] != MARK:
        return None
    return int.from_bytes(d[-6:], "little")


def _deliver(arrived: dict[int, list[int]], trace: PacketBatch, fids: npt.NDArray[np.uint32],
             ts: npt.NDArray[np.uint64], servers: dict[int, _Server], mac_to_server: dict[bytes, int],
             ctrl: Controller, hw: OvsHardwareSwitch, where: npt.NDArray[np.int64], c: dict[str, Any]) -> None:
    """Software switches and instances for the packets OVS delivered; detours go back through OVS."""
    for s, idx_list in arrived.items():
        if not idx_list:
            continue
        idx = np.sort(np.asarray(idx_list, dtype=np.uint32))
        keys = trace.key[idx]
        model = hw.forward(keys, fids[idx])  # the hardware-switch model must agree with OVS
        c["model_mismatch"] += int((model != s).sum())
        _at_server(servers[s], idx, trace, fids, ts, servers, ctrl, hw, where, c, kind="ingress")


def _at_server(sv: _Server, idx: npt.NDArray[np.uint32], trace: PacketBatch, fids: npt.NDArray[np.uint32],
               ts: npt.NDArray[np.uint64], servers: dict[int, _Server], ctrl: Controller, hw: OvsHardwareSwitch,
               where: npt.NDArray[np.int64], c: dict[str, Any], kind: str, hops: int = 0) -> None:
    keys = trace.key[idx]
    target = sv.sw.forward(keys, fids[idx], kind=kind)
    c["unrouted"] += int((target == NO_TARGET).sum())
    c["violations"] += int((target == NO_TARGET).sum())
    for iid, inst in list(ctrl.instances.items()):
        m = idx[target == iid]
        if not len(m):
            continue
        if inst.server != sv.id:
            _detour(sv, servers[inst.server], m, trace, fids, ts, servers, ctrl, hw, where, c, hops)
            continue
        sub = PacketBatch([trace.packet(int(i)) for i in m], ts_ns=np.ascontiguousarray(ts[m]))
        sub.parse()
        sub.flow_id[:] = flow_ids_for(sub.key)  # the instance computes the flow ID from what it received
        k = sub.key
        for jid, other in ctrl.instances.items():
            if jid != iid:
                c["violations"] += int((other.flow_table.lookup(k) != NO_SLOT).sum())
        inst.vnf.process(sub, inst.ctx)
        c["missing"] += int((inst.flow_table.lookup(k) == NO_SLOT).sum())
        inst.offered += len(m)
        c["processed"] += len(m)
        where[m] = iid


def _detour(src: _Server, dst: _Server, m: npt.NDArray[np.uint32], trace: PacketBatch, fids: npt.NDArray[np.uint32],
            ts: npt.NDArray[np.uint64], servers: dict[int, _Server], ctrl: Controller, hw: OvsHardwareSwitch,
            where: npt.NDArray[np.int64], c: dict[str, Any], hops: int) -> None:
    """Send packets ``m`` from ``src`` back into OVS addressed to ``dst``'s MAC, receive them there."""
    if hops >= 2:  # a packet bounced twice: the software switches disagree -- it reached no instance
        c["violations"] += len(m)
        return
    want: set[int] = set()
    got: list[int] = []
    burst = int(c["burst"])
    for b0 in range(0, len(m), burst):
        for i in m[b0:b0 + burst]:
            src.sock.send(dst.mac + trace.packet(int(i))[6:])
            want.add(int(i))
        deadline = time.monotonic() + float(c["wait_s"])
        while want and time.monotonic() < deadline:
            for d in dst.receive():
                i = _index(d)
                if i is not None and i in want:
                    got.append(i)
                    want.discard(i)
                else:
                    c["foreign"] += 1
            if want:
                time.sleep(0.0002)
    c["detoured"] += len(m)
    hw.count_pass(len(m), kind="detour")
    c["lost_detour"] = c.get("lost_detour", 0) + len(want)
    if got:
        _at_server(dst, np.sort(np.asarray(got, dtype=np.uint32)), trace, fids, ts, servers, ctrl, hw, where, c,
                   kind="detour", hops=hops + 1)


def _summary(trace: PacketBatch, fids: npt.NDArray[np.uint32], flow_of: npt.NDArray[np.int64],
             ts: npt.NDArray[np.uint64], where: npt.NDArray[np.int64], ctrl: Controller, hw: OvsHardwareSwitch,
             sws: dict[int, SoftwareSwitch], load_log: list[tuple[float, dict[int, int]]], c: dict[str, Any],
             wall: float, strategy: str, seed: int) -> dict[str, Any]:
    first = ctrl.transfers[0] if ctrl.transfers else None
    out: dict[str, Any] = {"mode": "live", "switch": "ovs", "strategy": strategy, "seed": seed,
                           "datapath_sync": hw.datapath_sync}
    # load of A and A' over the last third of the run (packets processed per second of trace time)
    imbalance = None
    a = b = 0.0
    if first is not None and len(load_log) >= 3:
        t1, l1 = load_log[-1]
        t0, l0 = load_log[len(load_log) * 2 // 3]
        span = max(t1 - t0, 1e-9)
        a = (l1.get(first.src, 0) - l0.get(first.src, 0)) / span
        b = (l1.get(first.dst, 0) - l0.get(first.dst, 0)) / span
        imbalance = abs(a - b) / ((a + b) / 2) if a + b else None
    # where the moved range's flows went: new flows (first packet after the split) and old ones
    new_at_dst = new_elsewhere = old_at_src = old_at_dst = 0
    if first is not None:
        # packets are sent in trace order, so "after the split" is "from the split's packet index on"
        k = int(c["split_index"])
        nflows = int(flow_of.max()) + 1
        first_pkt = np.full(nflows, len(trace), dtype=np.int64)
        np.minimum.at(first_pkt, flow_of, np.arange(len(trace), dtype=np.int64))
        flow_in = (fids >= first.lo) & (fids <= first.hi)
        flow_new = first_pkt[flow_of] >= k
        fold: set[bytes] = c["fold_keys"]
        in_fold = np.zeros(len(trace), dtype=bool)
        if fold:
            in_fold[:] = [trace.key[i].tobytes() in fold for i in range(len(trace))]
        after = (np.arange(len(trace)) >= k) & (where >= 0) & flow_in
        new_at_dst = int((after & flow_new & (where == first.dst)).sum())
        new_elsewhere = int((after & flow_new & (where != first.dst)).sum())
        old_at_src = int((after & in_fold & (where == first.src)).sum())
        old_at_dst = int((after & in_fold & (where == first.dst)).sum())
    out.update({
        "imbalance": imbalance,
        "load_a_pps": a,
        "load_a2_pps": b,
        "convergence_s": first.convergence_s if first else None,
        "split_at_s": first.started_s if first else None,
        "split_m": first.lo if first else None,
        "split_fraction": first.lo / 2 ** 32 if first else None,
        "old_flows": first.fold if first else 0,
        "peak_hw_rules": hw.peak_ovs_rules,  # read from OVS after every update
        "peak_hw_rules_model": hw.peak_rules,
        "hw_capacity": hw.capacity,
        "peak_sw_rules": max(sw.peak_rules for sw in sws.values()),
        "hw_rules_needed": max([t.rules_needed for t in ctrl.transfers] or [0]),
        "affinity_violations": c["violations"],
        "state_misses": c["missing"],
        "unrouted_packets": c["unrouted"],
        "state_bytes_moved": sum(t.state_bytes_moved for t in ctrl.transfers),
        "flows_moved": sum(t.flows_moved for t in ctrl.transfers),
        "pause_ms": max([t.pause_s for t in ctrl.transfers] or [0.0]) * 1e3,
        "added_latency_us": None,  # not measured on this testbed (the client waits for each burst)
        "detoured_packets": c["detoured"],
        "detour_gbps_peak": None,
        # what OVS itself counted on its ports: every packet from the client plus every detour
        "ovs_rx_packets": c["ovs_rx"],
        "ovs_tx_packets": c["ovs_tx"],
        "hw_packets_model": hw.counters.packets,
        "packets": len(trace),
        "processed": c["processed"],
        "lost_packets": c["lost"] + c.get("lost_detour", 0),
        "duplicate_packets": c["duplicates"],
        "foreign_frames": c["foreign"],
        "ovs_model_mismatches": c["model_mismatch"],
        "new_flow_packets_at_a2": new_at_dst,
        "new_flow_packets_elsewhere": new_elsewhere,
        "old_flow_packets_at_a": old_at_src,
        "old_flow_packets_at_a2": old_at_dst,  # Fold flows back after their state expired at A
        "transfers": len(ctrl.transfers),
        "ovs_updates": hw.pushes,
        "ovs_update_ms_max": max(hw.push_s or [0.0]) * 1e3,
        "ovs_update_ms_mean": float(np.mean(hw.push_s)) * 1e3 if hw.push_s else 0.0,
        "events": [f"{t:.3f} s: {e}" for t, e in ctrl.events],
        "wall_s": wall,
        "wall_pps": len(trace) / wall if wall else 0.0,
    })
    return out


__all__ = ["MARK", "run_live_ovs", "stamp"]
