"""SimpleNAT, Monitor, AdaptiveLB and QoS from Python: process() called directly on in-memory
batches of 64-byte packets from 10 000 concurrent flows, one worker, logged shared state.

Each benchmark round processes ROUND_PACKETS packets (fresh parsed copies, packet time moving on
from round to round) and asserts the result. Baselines measured in the same run: the bare parse
of the same batches (the floor any VNF pays on top of), and a pure-Python version of the same
middlebox logic on a small sample, whose output is checked against the native VNF's.
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
from vnfkit.tables import make_keys
from vnfkit.vnf import VNF, Context

FLOWS = 10_000
BATCH = 1024  # default; the benches run at BATCHES
BATCHES = [256, 1024, 4096]
ROUND_PACKETS = 65536
PPS = 14_880_952  # 10 GbE line rate of 64-byte frames: packet time advances like a real link
SAMPLE = 4096  # pure-Python baselines
VIP = "203.0.113.10"
BACKENDS = [f"10.1.0.{i}" for i in range(1, 9)]
QOS_CLASSES = [
    {"name": "ef", "dscp": 46, "rate_pps": 1_000_000, "burst": 64},
    {"name": "dns", "proto": "udp", "dport": 53, "rate_bps": 800_000_000, "burst": 64_000},
    {"name": "web", "proto": "tcp", "dport": 80},
]


# ------------------------------------------------------------------------------------------ trace


def make_trace(kind: str, seed: int = 1) -> tuple[_core.PacketBatch, np.ndarray]:
    """ROUND_PACKETS 64-byte IPv4 packets over FLOWS flows (every flow active all the time).
    Returns the unparsed batch and each packet's flow index."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, FLOWS, ROUND_PACKETS)
    f[:FLOWS] = rng.permutation(FLOWS)  # every flow appears in every round
    src = (10 << 24) + rng.integers(1, 1 << 24, FLOWS)
    sport = rng.integers(1024, 65535, FLOWS)
    cls = np.arange(FLOWS) % 3
    if kind == "lb":
        dst, dport, proto = np.full(FLOWS, int(ipaddress.IPv4Address(VIP))), np.full(FLOWS, 80), np.full(FLOWS, 6)
    else:
        dst = (198 << 24) + (18 << 16) + rng.integers(0, 1 << 17, FLOWS)
        dport = np.choose(cls, [5000, 53, 80])
        proto = np.where(cls == 1, 17, 6)
    keys = make_keys(src[f], dst[f], sport[f], dport[f], proto[f])
    ts = (np.arange(ROUND_PACKETS) * (1e9 / PPS)).astype(np.uint64)
    flags = np.where(proto[f] == 6, 0x10, 0).astype(np.uint8)
    b = _core.build_packets(keys, np.full(ROUND_PACKETS, 64, np.uint16), ts, flags, np.zeros(ROUND_PACKETS, np.uint32))
    if kind == "qos":
        ef = np.flatnonzero(cls[f] == 0)
        b.data[b.offsets[ef] + 15] = 46 << 2
        b.fix_checksums()
    return b, f


def fresh_batches(trace: _core.PacketBatch, round_no: int, parse: bool = True,
                  batch: int = BATCH) -> list[_core.PacketBatch]:
    """Parsed copies of the trace in BATCH-packet batches, packet time shifted to round `round_no`."""
    span = int(ROUND_PACKETS * 1e9 / PPS)
    out = []
    for s in range(0, len(trace), batch):
        b = trace.select(np.arange(s, min(s + batch, len(trace)), dtype=np.uint32))
        b.ts_ns[:] += np.uint64(round_no * span)
        b.packet_id[:] += np.uint64(round_no * ROUND_PACKETS)
        if parse:
            b.parse()
        out.append(b)
    return out


def parse_mpps(trace: _core.PacketBatch, batch: int) -> float:
    """Baseline: the bare parse of the same batches (best of 3)."""
    best = float("inf")
    for r in range(3):
        bs = fresh_batches(trace, r, parse=False, batch=batch)
        t0 = time.perf_counter()
        for b in bs:
            b.parse()
        best = min(best, time.perf_counter() - t0)
    return ROUND_PACKETS / best / 1e6


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


def run_bench(benchmark, vnf_cls: type[VNF], config: dict[str, Any], trace: _core.PacketBatch, batch: int,
              check: Callable[[VNF, list[_core.PacketBatch], int], None]) -> VNF:
    shared = SharedState()
    ctx = Context(0, 1, shared=shared)
    vnf = vnf_cls()
    vnf.setup(ctx, **config)
    state = {"round": 0, "batches": None}

    def setup():
        shared.context(0).drain_chunk()  # ship the previous round's determinants (not timed)
        state["batches"] = fresh_batches(trace, state["round"], batch=batch)
        state["round"] += 1
        return (), {}

    def target():
        for b in state["batches"]:
            vnf.process(b, ctx)

    benchmark.pedantic(target, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    check(vnf, state["batches"], state["round"])
    benchmark.extra_info["packets"] = ROUND_PACKETS
    benchmark.extra_info["flows"] = FLOWS
    benchmark.extra_info["batch"] = batch
    benchmark.extra_info["log_bytes_per_packet"] = round(len(shared.context(0).drain_chunk()) / ROUND_PACKETS, 2)
    return vnf


def report(benchmark, parse: float, py: float) -> None:
    benchmark.extra_info["baseline_parse_mpps"] = round(parse, 2)
    benchmark.extra_info["baseline_python_mpps"] = round(py, 4)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        mpps = ROUND_PACKETS / stats.stats.mean / 1e6
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
    interval = [round(1e9 / 1_000_000), round(1e9 / 100_000_000)]
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


def sample_of(trace: _core.PacketBatch) -> tuple[_core.PacketBatch, list[bytes], np.ndarray]:
    b = trace.select(np.arange(SAMPLE, dtype=np.uint32))
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
    trace, _ = make_trace("nat")

    def check(vnf, batches, rounds):
        for b in batches:
            assert (b.port == 2).all() and (b.key["src"][:, 0] == 100).all()
        assert batches[0].verify_checksums().all()
        assert vnf.shared_totals()["outbound"] == rounds * ROUND_PACKETS
        assert len(vnf.flows) == FLOWS

    run_bench(benchmark, SimpleNAT, {}, trace, batch, check)
    b, pkts, ts = sample_of(trace)
    py, ref = python_mpps(py_simplenat, pkts, ts)
    native_on(SimpleNAT, {}, b)
    assert b.to_list() == ref  # byte-identical output, checksums included
    report(benchmark, parse_mpps(trace, batch), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_monitor(benchmark, batch):
    trace, f = make_trace("mon")

    def check(vnf, batches, rounds):
        assert vnf.stats()["packets"] == rounds * ROUND_PACKETS
        rep = vnf.report(top=None)
        assert int(rep.prefixes["packets"].sum()) == rounds * ROUND_PACKETS
        assert int(rep.flows["packets"].sum()) == rounds * ROUND_PACKETS
        assert all((b.port == 1).all() for b in batches)

    run_bench(benchmark, Monitor, {}, trace, batch, check)
    b, pkts, ts = sample_of(trace)
    py, (flows, prefixes) = python_mpps(py_monitor, pkts, ts)
    mon = native_on(Monitor, {}, b)
    rep = mon.report(top=None)
    got = {(int.from_bytes(bytes(r["key"]["src"][:4]), "big"), int.from_bytes(bytes(r["key"]["dst"][:4]), "big"),
            int(r["key"]["sport"]), int(r["key"]["dport"]), int(r["key"]["proto"])): [int(r["packets"]), int(r["bytes"])]
           for r in rep.flows}
    assert got == flows
    assert {int(ipaddress.IPv4Address(str(r["prefix"]).split("/")[0])) >> 8: [int(r["packets"]), int(r["bytes"])]
            for r in rep.prefixes} == prefixes
    report(benchmark, parse_mpps(trace, batch), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_adaptive_lb(benchmark, batch):
    trace, _ = make_trace("lb")
    cfg = {"vip": VIP, "backends": BACKENDS}

    def check(vnf, batches, rounds):
        loads = vnf.loads()
        assert int(loads.sum()) == FLOWS and loads.max() - loads.min() <= 1
        assert vnf.stats()["new_flows"] == FLOWS  # every later packet stuck to its flow's backend
        for b in batches:
            assert (b.key["dst"][:, 0] == 10).all() and (b.port == 1).all()
        assert batches[-1].verify_checksums().all()

    run_bench(benchmark, AdaptiveLB, cfg, trace, batch, check)
    b, pkts, ts = sample_of(trace)
    py, ref = python_mpps(py_lb, pkts, ts)
    native_on(AdaptiveLB, cfg, b)
    assert b.to_list() == ref
    report(benchmark, parse_mpps(trace, batch), py)


@pytest.mark.benchmark(group="middleboxes")
@pytest.mark.parametrize("batch", BATCHES)
def test_qos(benchmark, batch):
    trace, f = make_trace("qos")
    cfg = {"classes": QOS_CLASSES}

    def check(vnf, batches, rounds):
        cs = vnf.class_stats()
        span_s = rounds * ROUND_PACKETS / PPS
        assert sum(v["passed"] + v["dropped"] for v in cs.values()) == rounds * ROUND_PACKETS
        assert abs(cs["ef"]["passed"] - (64 + span_s * 1e6)) <= 2 * rounds + 1
        assert abs(cs["dns"]["passed_bytes"] - (64_000 + span_s * 1e8)) <= 64 * (2 * rounds + 1)
        assert cs["web"]["dropped"] == 0

    run_bench(benchmark, QoS, cfg, trace, batch, check)
    b, pkts, ts = sample_of(trace)
    py, ref = python_mpps(py_qos, pkts, ts)
    native_on(QoS, cfg, b)
    assert (b.port == 1).tolist() == ref
    report(benchmark, parse_mpps(trace, batch), py)
