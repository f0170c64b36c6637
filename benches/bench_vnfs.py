"""MazuNAT throughput from Python on in-memory 64-byte packets, and latency through the Runner.

Workload: ``flows`` concurrent flows (60 % TCP, 40 % UDP) from 10/8 to 198.18/15, their mappings
established beforehand; then steady state: every batch holds packets of random flows, half
outbound (hits: source NAT) and half inbound replies (hits: reverse translation). One core,
``MazuNAT.process`` called directly (no runner threads).

The NAT rewrites packets in place, so every round restores the batches first (a numpy copy of the
packet bytes and the key/port/drop columns); ``benchmark.pedantic(setup=...)`` keeps that restore
*outside* the timed number. ``test_restore_cost`` measures the restore alone.

Baselines in the same run: the bare parse of the same batches (``test_parse_same_batches``) and a
pure-Python dict NAT (struct parsing, dict lookups, RFC 1624 checksum updates on bytearrays) on a
small sample (``extra_info["python_dict_mpps"]``).

Latency: ``test_runner_latency`` runs the same traffic through ``Runner(queues=1)`` in batches of
64..8192 packets and reports the runner's HdrHistogram p50/p99 (arrival -> release, µs).
"""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
from vnfkit.state import SharedState
from vnfkit.tables import FLOW_KEY_DTYPE, make_keys
from vnfkit.runtime import Runner
from vnfkit.vnf import Context

PUB = 0xC0000201  # 192.0.2.1
TOTAL = 1 << 16   # packets per timed round (split into batches)


def _u32(col: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(col[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


class Setup:
    """A MazuNAT with `flows` established mappings and the steady-state packets to replay."""

    def __init__(self, flows: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.flows = flows
        src = 0x0A000000 + rng.choice(1 << 24, flows, replace=False).astype(np.uint32)
        dst = 0xC6120000 + rng.integers(0, 1 << 17, flows).astype(np.uint32)
        sport = rng.integers(1024, 65536, flows).astype(np.uint16)
        dport = rng.choice(np.array([80, 443, 53, 123], np.uint16), flows)
        proto = np.where(np.arange(flows) < int(flows * 0.6), 6, 17).astype(np.uint8)
        self.keys = make_keys(src, dst, sport, dport, proto)
        self.ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
        self.nat = MazuNAT()
        self.nat.setup(self.ctx, port_lo=1024, port_hi=65535, max_flows=1 << 17)
        # establish: one outbound packet per flow
        est = _core.build_packets(self.keys, np.full(flows, 64, np.uint16), np.zeros(flows, np.uint64),
                                  np.where(proto == 6, 0x02, 0).astype(np.uint8), np.zeros(flows, np.uint32))
        est.packet_id[:] = np.arange(flows, dtype=np.uint64)
        est.parse()
        for s in range(0, flows, 8192):
            part = est.select(np.arange(s, min(s + 8192, flows), dtype=np.uint32))
            self.nat.process(part, self.ctx)
            assert np.all(part.port == EXTERNAL)
            est.key[s:s + len(part)] = part.key
        self.nat_port = est.key["sport"].copy()
        assert len(set(zip(self.nat_port.tolist(), proto.tolist()))) == flows
        reply = np.zeros(flows, FLOW_KEY_DTYPE)
        reply["src"], reply["dst"] = est.key["dst"], est.key["src"]
        reply["sport"], reply["dport"] = est.key["dport"], est.key["sport"]
        reply["proto"], reply["family"] = proto, 4
        self.reply = reply
        self.src, self.sport = src, sport

    def batches(self, size: int, total: int = TOTAL, seed: int = 2) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Steady-state batches (parsed): random flows, alternating outbound / inbound packets."""
        rng = np.random.default_rng(seed)
        n = max(size, (total // size) * size)
        fl = rng.integers(0, self.flows, n)
        inbound = (np.arange(n) % 2) == 1
        keys = np.where(inbound, self.reply[fl], self.keys[fl])
        ts = np.full(n, 10**9, np.uint64)
        flags = np.where(keys["proto"] == 6, 0x10, 0).astype(np.uint8)
        big = _core.build_packets(keys, np.full(n, 64, np.uint16), ts, flags, np.zeros(n, np.uint32))
        big.packet_id[:] = np.arange(n, dtype=np.uint64) + np.uint64(10**7)
        big.parse()
        out = [big.select(np.arange(s, s + size, dtype=np.uint32)) for s in range(0, n, size)]
        return out, fl, inbound


class Restorable:
    """Batches plus pristine copies of what the NAT changes (bytes, key, port, drop)."""

    def __init__(self, batches: list[Any]) -> None:
        self.b = batches
        self.data = [x.data.copy() for x in batches]
        self.key = [x.key.copy() for x in batches]

    def restore(self) -> None:
        for x, d, k in zip(self.b, self.data, self.key):
            x.data[:] = d
            x.key[:] = k
            x.drop[:] = 0

    @property
    def packets(self) -> int:
        return sum(len(x) for x in self.b)


def check_translations(st: Setup, batches: list[Any], fl: np.ndarray, inbound: np.ndarray) -> None:
    port = np.concatenate([x.port for x in batches])
    src = np.concatenate([_u32(x.key["src"]) for x in batches])
    dst = np.concatenate([_u32(x.key["dst"]) for x in batches])
    sp = np.concatenate([x.key["sport"] for x in batches])
    dp = np.concatenate([x.key["dport"] for x in batches])
    out = ~inbound
    assert np.all(port[out] == EXTERNAL) and np.all(port[inbound] == INTERNAL)
    assert np.all(src[out] == PUB) and np.array_equal(sp[out], st.nat_port[fl[out]])
    assert np.array_equal(dst[inbound], st.src[fl[inbound]]) and np.array_equal(dp[inbound], st.sport[fl[inbound]])
    ok = np.concatenate([x.verify_checksums() for x in batches])
    assert ok.all()


_SETUPS: dict[int, Setup] = {}


def setup_for(flows: int) -> Setup:
    if flows not in _SETUPS:
        _SETUPS[flows] = Setup(flows)
    return _SETUPS[flows]


# ------------------------------------------------------------------ pure-Python dict NAT baseline


def _csum_update(csum: int, old: int, new: int) -> int:
    # RFC 1624 eq. 3 on one 16-bit word: HC' = ~(~HC + ~m + m')
    s = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def py_nat(pkts: list[bytearray], out_map: dict, in_map: dict, pub: bytes) -> int:
    """Baseline: per packet, parse with struct, look the tuple up in a dict, rewrite in place."""
    done = 0
    pub_hi, pub_lo = struct.unpack("!HH", pub)
    for p in pkts:
        ihl = (p[14] & 15) * 4
        l4 = 14 + ihl
        proto = p[23]
        ck_off = l4 + (16 if proto == 6 else 6)
        sport, dport = struct.unpack_from("!HH", p, l4)
        src, dst = bytes(p[26:30]), bytes(p[30:34])
        if dst == pub:
            m = in_map.get((src, sport, dport, proto))
            if m is None:
                continue
            naddr, nport = m
            a_off, p_off, old_a, old_p = 30, l4 + 2, dst, dport
        else:
            nport = out_map.get((src, sport, dst, dport, proto))
            if nport is None:
                continue
            naddr = pub
            a_off, p_off, old_a, old_p = 26, l4, src, sport
        oh, ol = struct.unpack("!HH", old_a)
        nh, nl = struct.unpack("!HH", naddr)
        ipc = struct.unpack_from("!H", p, 24)[0]
        ipc = _csum_update(_csum_update(ipc, oh, nh), ol, nl)
        struct.pack_into("!H", p, 24, ipc)
        l4c = struct.unpack_from("!H", p, ck_off)[0]
        if not (proto == 17 and l4c == 0):
            l4c = _csum_update(_csum_update(_csum_update(l4c, oh, nh), ol, nl), old_p, nport)
            struct.pack_into("!H", p, ck_off, l4c or (0xFFFF if proto == 17 else 0))
        p[a_off:a_off + 4] = naddr
        struct.pack_into("!H", p, p_off, nport)
        done += 1
    return done


def python_baseline(st: Setup, batches: list[Any]) -> tuple[float, list[bytearray], Any]:
    sample = batches[0].select(np.arange(min(2048, len(batches[0])), dtype=np.uint32)) if len(batches[0]) >= 2048 \
        else batches[0]
    pkts = [bytearray(x) for x in sample.to_list()]
    pub = struct.pack("!I", PUB)
    srcb = st.keys["src"][:, :4]
    dstb = st.keys["dst"][:, :4]
    out_map = {(bytes(srcb[i]), int(st.sport[i]), bytes(dstb[i]), int(st.keys["dport"][i]), int(st.keys["proto"][i])):
               int(st.nat_port[i]) for i in range(st.flows)}
    in_map = {(bytes(dstb[i]), int(st.keys["dport"][i]), int(st.nat_port[i]), int(st.keys["proto"][i])):
              (bytes(srcb[i]), int(st.sport[i])) for i in range(st.flows)}
    t0 = time.perf_counter()
    done = py_nat(pkts, out_map, in_map, pub)
    dt = time.perf_counter() - t0
    assert done == len(pkts)
    # the baseline is right too: its output equals what MazuNAT produced for these packets
    ref = sample.select(np.arange(len(sample), dtype=np.uint32))
    return len(pkts) / dt / 1e6, pkts, ref


# ------------------------------------------------------------------------------------- benches


@pytest.mark.benchmark(group="mazunat")
@pytest.mark.parametrize("flows", [10_000, 100_000])
@pytest.mark.parametrize("size", [1024, 2048, 4096, 8192])
def test_mazunat_process(benchmark, flows: int, size: int) -> None:
    st = setup_for(flows)
    batches, fl, inbound = st.batches(size)
    rb = Restorable(batches)
    pristine = [x.select(np.arange(len(x), dtype=np.uint32)) for x in batches[:1]]
    nat, ctx = st.nat, st.ctx

    def go() -> None:
        for x in rb.b:
            nat.process(x, ctx)

    benchmark.pedantic(go, setup=rb.restore, rounds=5, iterations=1, warmup_rounds=1)
    check_translations(st, rb.b, fl, inbound)
    mpps_nat = rb.packets / benchmark.stats.stats.min / 1e6 if benchmark.stats else 0.0
    base_mpps, py_out, _ = python_baseline(st, pristine)
    # the baseline produced the same bytes as MazuNAT for its sample
    nat_bytes = batches[0].to_list()[: len(py_out)]
    assert [bytes(p) for p in py_out] == nat_bytes
    benchmark.extra_info.update({
        "packets": rb.packets, "flows": flows, "batch": size, "mpps_best": round(mpps_nat, 2),
        "python_dict_mpps": round(base_mpps, 3), "restore_outside_timing": True,
    })


@pytest.mark.benchmark(group="mazunat")
@pytest.mark.parametrize("size", [1024, 8192])
def test_parse_same_batches(benchmark, size: int) -> None:
    """Baseline: the bare parse of the same batches (what any VNF pays before its own work)."""
    st = setup_for(10_000)
    batches, _, inbound = st.batches(size)

    def go() -> None:
        for x in batches:
            x.parse()

    benchmark(go)
    assert all(np.all(x.drop == 0) for x in batches)
    benchmark.extra_info["packets"] = sum(len(x) for x in batches)


@pytest.mark.benchmark(group="mazunat")
@pytest.mark.parametrize("size", [1024, 8192])
def test_restore_cost(benchmark, size: int) -> None:
    """The per-round restore that the process benchmarks keep outside their timing."""
    st = setup_for(10_000)
    batches, _, _ = st.batches(size)
    rb = Restorable(batches)
    benchmark(rb.restore)
    assert all(np.array_equal(x.data, d) for x, d in zip(rb.b, rb.data))
    benchmark.extra_info["packets"] = rb.packets


@pytest.mark.benchmark(group="mazunat-latency")
@pytest.mark.parametrize("size", [64, 256, 1024, 4096, 8192])
def test_runner_latency(benchmark, size: int) -> None:
    """p50/p99 packet latency (arrival -> release) through Runner(queues=1) against batch size."""
    st = setup_for(10_000)
    batches, fl, inbound = st.batches(size, total=1 << 15)
    rb = Restorable(batches)
    runner = Runner(MazuNAT, queues=1, config={"port_lo": 1024, "max_flows": 1 << 17})
    # the runner's own NAT instance needs the mappings too: establish them through it
    est = _core.build_packets(st.keys, np.full(st.flows, 64, np.uint16), np.zeros(st.flows, np.uint64),
                              np.where(st.keys["proto"] == 6, 0x02, 0).astype(np.uint8), np.zeros(st.flows, np.uint32))
    outs: list[Any] = []
    runner.run([est], on_output=lambda q, b: outs.append(b))
    nat_port = outs[0].key["sport"].copy()
    reply = st.reply.copy()
    reply["dport"] = nat_port
    keys = np.where(inbound, reply[fl], st.keys[fl])
    n = len(keys)
    big = _core.build_packets(keys, np.full(n, 64, np.uint16), np.full(n, 10**9, np.uint64),
                              np.where(keys["proto"] == 6, 0x10, 0).astype(np.uint8), np.zeros(n, np.uint32))
    parts = [big.select(np.arange(s, s + size, dtype=np.uint32)) for s in range(0, n, size)]
    rb = Restorable(parts)
    results = []

    def go() -> None:
        results.append(runner.run(rb.b))

    try:
        benchmark.pedantic(go, setup=rb.restore, rounds=3, iterations=1)
    finally:
        runner.close()
    last = results[-1]
    assert last.dropped == 0 and last.forwarded == n and last.latency.total == n
    port = np.concatenate([x.port for x in rb.b])
    assert np.all(port[~inbound] == EXTERNAL) and np.all(port[inbound] == INTERNAL)
    benchmark.extra_info.update({"packets": n, "batch": size, "p50_us": round(last.p50_us, 1),
                                 "p99_us": round(last.p99_us, 1), "mpps": round(last.mpps, 2)})
