"""SimpleNAT, Monitor, AdaptiveLB and QoS from Python: process() called directly, one worker,
logged shared state, on generated traffic with flows arriving all the time.

Workload (:class:`vnfkit.traffic.TwoWayTraffic` without replies): Poisson flow arrivals at
``FLOW_RATE`` flows/s with lognormal durations of mean ``MEAN_DURATION_S`` (Little's law: ~10 000
concurrent flows) and Pareto sizes, 64-byte frames, packet time advancing at 1 GbE line rate
(1.49 Mpps). The middleboxes' flow timeouts are scaled to the trace (idle 200 ms, 50 ms after a
FIN), so flows end and expire while the clock runs. Before timing, the trace runs untimed for 1.5
mean durations; then every round processes the next ~ROUND_PACKETS packets (new flows in every
round), parsed outside the timing (``mpps_incl_parse`` adds the same run's parse rate). Median of
the rounds (``extra_info["mpps"]``). Every round's result is asserted. Baselines in the same run:
the bare parse of the same batches and a pure-Python version of each middlebox on a sample of the
trace, whose output is checked against the native VNF's.
"""

from __future__ import annotations

import gc
import ipaddress
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.nfs.adaptive_lb import AdaptiveLB
from vnfkit.nfs.monitor import Monitor
from vnfkit.nfs.qos import QoS
from vnfkit.nfs.simplenat import SimpleNAT
from vnfkit.state import SharedState
from vnfkit.traffic import TwoWayTraffic
from vnfkit.vnf import VNF, Context

FLOWS = 10_000
FLOW_RATE = 40_000.0
MEAN_DURATION_S = 0.25  # FLOW_RATE * MEAN_DURATION_S = FLOWS concurrent flows
BATCH = 1024  # default; the benches run at BATCHES
BATCHES = [256, 1024, 4096]
ROUND_PACKETS = 65536
PPS = 1_488_095  # 1 GbE line rate of 64-byte frames: packet time advances like a real link
SAMPLE = 4096  # pure-Python baselines
VIP = "203.0.113.10"
BACKENDS = [f"10.1.0.{i}" for i in range(1, 9)]
QOS_CLASSES = [
    {"name": "ef", "dscp": 46, "rate_pps": 100_000, "burst": 64},
    {"name": "dns", "proto": "udp", "dport": 53, "rate_bps": 80_000_000, "burst": 64_000},
    {"name": "web", "proto": "tcp", "dport": 80},
]
#: flow timeouts scaled to the trace's span, so flows end and expire during the timed rounds
TIMEOUTS = {"idle_timeout_s": 0.2, "tcp_close_timeout_s": 0.05}


# ------------------------------------------------------------------------------------------ trace


class Stream:
    """The middlebox's traffic: consecutive windows of one generated trace (see the docstring)."""

    def __init__(self, kind: str, batch: int, seed: int = 1) -> None:
        span_s = 1.5 * MEAN_DURATION_S + 12 * ROUND_PACKETS / PPS
        self.kind, self.batch = kind, batch
        self.t = TwoWayTraffic(int(FLOW_RATE * span_s), int(span_s * PPS), seed, chunk=ROUND_PACKETS, rate_pps=PPS,
                               flow_rate=FLOW_RATE, mean_duration_s=MEAN_DURATION_S, udp_fraction=0.3)
        k = self.t.plan.keys
        cls = np.arange(len(k)) % 3
        if kind == "lb":
            k["dst"][:, :4] = np.frombuffer(ipaddress.IPv4Address(VIP).packed, np.uint8)
            k["dport"], k["proto"] = 80, 6
        elif kind == "qos":
            k["dport"] = np.choose(cls, [5000, 53, 80])
            k["proto"] = np.where(cls == 1, 17, 6)
        self.packets = 0

    def window(self) -> _core.PacketBatch:
        """The next window as one parsed batch (QoS: EF flows marked with DSCP 46)."""
        b = self.t.next_input()
        assert b is not None, "trace too short for the rounds"
        b.parse()
        if self.kind == "qos":
            ef = np.flatnonzero((b.key["dport"] == 5000) & (b.key["proto"] == 6))
            b.data[b.offsets[ef] + 15] = 46 << 2
            b.fix_checksums()
        self.packets += len(b)
        return b

    def batches(self) -> list[_core.PacketBatch]:
        b = self.window()
        n = len(b)
        return [b.select(np.arange(s, min(s + self.batch, n), dtype=np.uint32)) for s in range(0, n, self.batch)]


def parse_mpps(stream: Stream) -> float:
    """Baseline: the bare parse of batches of the same trace (median of 3 windows)."""
    times, n = [], 0
    for _ in range(3):
        bs = stream.batches()
        n = sum(len(x) for x in bs)
        t0 = time.perf_counter()
        for x in bs:
            x.parse()
        times.append((time.perf_counter() - t0) / n)
    return 1 / float(np.median(times)) / 1e6


def python_mpps(fn: Callable[[list[bytes], np.ndarray], Any], pkts: list[bytes], ts: np.ndarray) -> tuple[float, Any]:
    """Best of 3 runs of the pure-Python baseline, with the garbage collector paused (as timeit does)."""
    best, res = float("inf"), None
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            res = fn(pkts, ts)
            best = min(best, time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return len(pkts) / best / 1e6, res


def run_bench(benchmark, vnf_cls: type[VNF], config: dict[str, Any], stream: Stream,
              check: Callable[[VNF, list[_core.PacketBatch], int], None]) -> VNF:
    shared = SharedState()
    ctx = Context(0, 1, shared=shared)
    vnf = vnf_cls()
    vnf.setup(ctx, **config)
    while stream.t.outbound_packets < 1.5 * MEAN_DURATION_S * PPS:  # untimed: to steady state
        for b in stream.batches():
            vnf.process(b, ctx)
    state: dict[str, Any] = {"batches": None, "sizes": []}

    def setup():
        shared.context(0).drain_chunk()  # ship the previous round's determinants (not timed)
        state["batches"] = stream.batches()
        state["sizes"].append(sum(len(x) for x in state["batches"]))
        return (), {}

    def target():
        for b in state["batches"]:
            vnf.process(b, ctx)

    benchmark.pedantic(target, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    check(vnf, state["batches"], stream.packets)
    benchmark.extra_info["packets"] = int(np.median(state["sizes"]))
    benchmark.extra_info["flows_concurrent_target"] = FLOWS
    benchmark.extra_info["new_flows_per_s"] = FLOW_RATE
    benchmark.extra_info["batch"] = stream.batch
    benchmark.extra_info["log_bytes_per_packet"] = round(len(shared.context(0).drain_chunk()) / state["sizes"][-1], 2)
    return vnf


def report(benchmark, parse: float, py: float) -> None:
    benchmark.extra_info["baseline_parse_mpps"] = round(parse, 2)
    benchmark.extra_info["baseline_python_mpps"] = round(py, 4)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        mpps = benchmark.extra_info["packets"] / stats.stats.median / 1e6
        benchmark.extra_info["mpps"] = round(mpps, 2)
        benchmark.extra_info["mpps_incl_parse"] = round(1 / (1 / mpps + 1 / parse), 2)
        benchmark.extra_info["speedup_vs_python"] = round(mpps / py, 1)


# --------------------------------------------------------------------------- pure-Python helpers


def _csum_update(c: int, old: int, new: int) -> int:
    """RFC 1624 incremental update of a 16-bit one's-complement checksum for a 16-bit word."""
    s = (~c & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _rewrite_addr(p: bytearray, off: int, new: int) -> None:
    """Set the IPv4 address at byte `off` (12 src / 16 dst of the IP header at 14), fixing checksums."""
    old = struct.unpack_from("!I", p, 14 + off)[0]
    struct.pack_into("!I", p, 14 + off, new)
    ihl = (p[14] & 15) * 4
    proto = p[23]
    for ow, nw in ((old >> 16, new >> 16), (old & 0xFFFF, new & 0xFFFF)):
        struct.pack_into("!H", p, 24, _csum_update(struct.unpack_from("!H", p, 24)[0], ow, nw))
        if proto in (6, 17):
            co = 14 + ihl + (16 if proto == 6 else 6)
            c = struct.unpack_from("!H", p, co)[0]
            if proto == 17 and c == 0:
                continue
            struct.pack_into("!H", p, co, _csum_update(c, ow, nw))


def _tuple(p: bytes) -> tuple[int, int, int, int, int]:
    ihl = (p[14] & 15) * 4
    src, dst = struct.unpack_from("!II", p, 26)
    sp, dp = struct.unpack_from("!HH", p, 14 + ihl)
    return src, dst, sp, dp, p[23]


def py_simplenat(pkts: list[bytes], ts: np.ndarray) -> list[bytes]:
    flows: dict[tuple[int, ...], list[int]] = {}
    out = []
    for p in pkts:
        q = bytearray(p)
        src, dst, sp, dp, proto = _tuple(q)
        if src >> 24 == 10:
            _rewrite_addr(q, 12, (100 << 24) | (src & 0xFFFFFF))
            rec = flows.setdefault((src, dst, sp, dp, proto), [0, 0])
            rec[0] += 1
            rec[1] += struct.unpack_from("!H", q, 16)[0]
        out.append(bytes(q))
    return out


def py_monitor(pkts: list[bytes], ts: np.ndarray) -> tuple[dict, dict]:
    flows: dict[tuple[int, ...], list[int]] = {}
    prefixes: dict[int, list[int]] = {}
    for p in pkts:
        k = _tuple(p)
        n = struct.unpack_from("!H", p, 16)[0]
        rec = flows.setdefault(k, [0, 0])
        rec[0] += 1
        rec[1] += n
        pr = prefixes.setdefault(k[0] >> 8, [0, 0])
        pr[0] += 1
        pr[1] += n
    return flows, prefixes


def py_lb(pkts: list[bytes], ts: np.ndarray) -> list[bytes]:
    vip = int(ipaddress.IPv4Address(VIP))
    backends = [int(ipaddress.IPv4Address(b)) for b in BACKENDS]
    loads = [0] * len(backends)
    flows: dict[tuple[int, ...], int] = {}
    out = []
    for p in pkts:
        q = bytearray(p)
        k = _tuple(q)
        if k[1] == vip and k[3] == 80 and k[4] == 6:
            b = flows.get(k)
            if b is None:
                b = min(range(len(loads)), key=lambda i: (loads[i], i))
                loads[b] += 1
                flows[k] = b
            _rewrite_addr(q, 16, backends[b])
        out.append(bytes(q))
    return out


def py_qos(pkts: list[bytes], ts: np.ndarray) -> list[bool]:
    """GCRA per class, in whole ns per token as the native buckets."""
    interval = [round(1e9 / 100_000), round(1e9 / 10_000_000)]
    tol = [64 * interval[0], 64_000 * interval[1]]
    tat = [0, 0]
    out = []
    for p, now in zip(pkts, ts.tolist()):
        k = _tuple(p)
        c = 0 if p[15] >> 2 == 46 else 1 if (k[4] == 17 and k[3] == 53) else -1
        if c < 0:
            out.append(True)
            continue
        cost = 1 if c == 0 else len(p)
        nxt = max(tat[c], now) + cost * interval[c]
        ok = nxt - now <= tol[c]
        if ok:
            tat[c] = nxt
        out.append(ok)
    return out


def sample_of(stream: Stream) -> tuple[_core.PacketBatch, list[bytes], np.ndarray]:
    b = stream.window().select(np.arange(SAMPLE, dtype=np.uint32))
    pkts = b.to_list()
    b.parse()
    return b, pkts, b.ts_ns.copy()


def native_on(vnf_cls: type[VNF], config: dict[str, Any], b: _core.PacketBatch) -> VNF:
    ctx = Context(0, 1, shared=SharedState())
    vnf = vnf_cls()
    vnf.setup(ctx, **config)
    for s in range(0, len(b), BATCH):
        part = b.select(np.arange(s, min(s + BATCH, len(b)), dtype=np.uint32))
        vnf.process(part, ctx)
        b.data[b.offsets[s]:b.offsets[min(s + BATCH, len(b))]] = part.data  # keep the rewritten bytes
        b.port[s:s + len(part)] = part.port
    return vnf


# ------------------------------------------------------------------------------------------ benches


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_simplenat(benchmark, batch):
    def check(vnf, batches, total):
        for b in batches:
            assert (b.port == 2).all() and (b.key["src"][:, 0] == 100).all()
        assert batches[0].verify_checksums().all()
        assert vnf.shared_totals()["outbound"] == total
        assert 0 < len(vnf.flows) < total

    stream = Stream("nat", batch)
    run_bench(benchmark, SimpleNAT, dict(TIMEOUTS), stream, check)
    b, pkts, ts = sample_of(stream)
    py, ref = python_mpps(py_simplenat, pkts, ts)
    native_on(SimpleNAT, {}, b)
    assert b.to_list() == ref  # byte-identical output, checksums included
    report(benchmark, parse_mpps(stream), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_monitor(benchmark, batch):
    def check(vnf, batches, total):
        assert vnf.stats()["packets"] == total
        rep = vnf.report(top=None)
        assert int(rep.prefixes["packets"].sum()) == total
        assert int(rep.flows["packets"].sum()) == total  # active + exported records
        assert all((b.port == 1).all() for b in batches)

    stream = Stream("mon", batch)
    run_bench(benchmark, Monitor, dict(TIMEOUTS), stream, check)
    b, pkts, ts = sample_of(stream)
    py, (flows, prefixes) = python_mpps(py_monitor, pkts, ts)
    mon = native_on(Monitor, {}, b)
    rep = mon.report(top=None)
    got = {(int.from_bytes(bytes(r["key"]["src"][:4]), "big"), int.from_bytes(bytes(r["key"]["dst"][:4]), "big"),
            int(r["key"]["sport"]), int(r["key"]["dport"]), int(r["key"]["proto"])): [int(r["packets"]), int(r["bytes"])]
           for r in rep.flows}
    assert got == flows
    assert {int(ipaddress.IPv4Address(str(r["prefix"]).split("/")[0])) >> 8: [int(r["packets"]), int(r["bytes"])]
            for r in rep.prefixes} == prefixes
    report(benchmark, parse_mpps(stream), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_adaptive_lb(benchmark, batch):
    cfg = {"vip": VIP, "backends": BACKENDS}

    def check(vnf, batches, total):
        loads = vnf.loads()
        st = vnf.stats()
        assert int(loads.sum()) == st["new_flows"] - st["flows_ended"] == len(vnf.flows) > 0
        assert st["flows_ended"] > 0  # flows really end while the clock runs
        for b in batches:
            assert (b.key["dst"][:, 0] == 10).all() and (b.port == 1).all()
        assert batches[-1].verify_checksums().all()

    stream = Stream("lb", batch)
    run_bench(benchmark, AdaptiveLB, {**cfg, **TIMEOUTS}, stream, check)
    b, pkts, ts = sample_of(stream)
    py, ref = python_mpps(py_lb, pkts, ts)
    native_on(AdaptiveLB, cfg, b)
    assert b.to_list() == ref
    report(benchmark, parse_mpps(stream), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_qos(benchmark, batch):
    cfg = {"classes": QOS_CLASSES}

    def check(vnf, batches, total):
        cs = vnf.class_stats()
        span_s = (int(batches[-1].ts_ns[-1]) + 1) / 1e9
        assert sum(v["passed"] + v["dropped"] for v in cs.values()) == total
        assert cs["ef"]["passed"] <= 64 + span_s * 100_000 + 1  # a token bucket never passes more
        assert cs["dns"]["passed_bytes"] <= 64_000 + span_s * 1e7 + 64
        assert cs["ef"]["dropped"] > 0 and cs["web"]["dropped"] == 0

    stream = Stream("qos", batch)
    run_bench(benchmark, QoS, cfg, stream, check)
    b, pkts, ts = sample_of(stream)
    py, ref = python_mpps(py_qos, pkts, ts)
    native_on(QoS, cfg, b)
    assert (b.port == 1).tolist() == ref
    report(benchmark, parse_mpps(stream), py)
