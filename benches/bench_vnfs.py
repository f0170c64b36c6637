"""MazuNAT throughput from Python: realistic two-way traffic (the headline) and steady state.

**Realistic work** (``test_mazunat_two_way``, the headline figure). A heavy-tailed trace from
:class:`vnfkit.traffic.TwoWayTraffic`: flows arrive all the time (Poisson), with lognormal
durations and Pareto sizes (70 % TCP with SYN ... FIN, 30 % UDP), packet time advancing at 1 GbE
line rate of 64-byte frames (1.49 Mpps), and a simulated remote host that answers every translated
packet 200 µs later (its replies enter with the next round, merged by time, timed when they
arrive: a round, 44 ms of trace, is shorter than every timeout, so every reply must find its
mapping and the bench asserts zero ``no-mapping`` drops). So every timed round
holds new flows (ports allocated from the logged shared pool), replies (reverse translations) and
expiry: the NAT's timeouts are scaled to the trace (TCP established 1 s, after FIN 50 ms, UDP
200 ms, GC every 10 ms of packet time), so mappings expire and their ports are reused while the
clock runs. Logging is on (every port allocation and release is a determinant; the log is drained
between rounds, outside the timing). Before timing, the NAT runs the trace until the number of live
mappings reaches its steady state; the figures report the measured live mappings, new mappings and
expirations per round. ``parse`` says whether ``PacketBatch.parse`` is inside the timed loop.
Median of the timed rounds (pytest-benchmark's stats; ``extra_info["mpps_median"]``), with the
spread over the rounds (``mpps_min`` / ``mpps_max``: the slowest and the fastest round).

Two modes: endpoint-independent pools (``eim``, the default: one port per mapping from a shared
pool of 1024-65535 per protocol, which cannot hold 100 k concurrent TCP mappings, so at 100 k flows
the drop share is reported) and endpoint-dependent mode (``edm``: ports reused towards different
remote endpoints; no exhaustion drop is allowed).

**Steady state** (``test_mazunat_steady_state``, labelled so): mappings set up before timing, every
round replays the same established flows at a constant packet time (no new flows, no expiry),
parsed outside the timing. Baselines in the same run: the bare parse of the same batches and a
pure-Python dict NAT on a sample (whose output bytes must equal MazuNAT's).

Latency: ``test_runner_latency`` runs steady-state traffic through ``Runner(queues=1)``.
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
from vnfkit.traffic import REPLY_ID_OFFSET, TwoWayTraffic
from vnfkit.vnf import Context

PUB = 0xC0000201  # 192.0.2.1
TOTAL = 1 << 16   # packets per timed round (split into batches)
RATE_PPS = 1_488_095.0
#: NAT timeouts scaled to the trace's span, so expiry and port reuse run during the timed rounds
SCALED_TIMEOUTS = {"tcp_timeout_s": 1.0, "tcp_done_timeout_s": 0.05, "udp_timeout_s": 0.2, "gc_interval_s": 0.01}
#: concurrent flows -> (new flows per second, mean flow duration s): Little's law, C = rate * duration
WORKLOADS = {10_000: (20_000.0, 0.5), 100_000: (150_000.0, 0.67)}
ROUNDS, WARMUP_ROUNDS = 9, 1


def _u32(col: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(col[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


# --------------------------------------------------------------------------- realistic two-way work


class TwoWay:
    """A MazuNAT fed by TwoWayTraffic round by round; the check data of the last round kept."""

    def __init__(self, flows: int, batch: int, mode: str, seed: int = 7) -> None:
        rate, dur = WORKLOADS[flows]
        self.flows, self.batch, self.mode = flows, batch, mode
        # 1.5x the span the rounds need: the generated trace's busy periods run above RATE_PPS, so
        # its fixed-width windows hold more than TOTAL packets and it ends sooner than packets/rate
        # (flows scaled alike, so the new-flow rate stays `rate`)
        span_s = 1.5 * (1.5 * dur + (ROUNDS + WARMUP_ROUNDS + 4) * TOTAL / RATE_PPS)
        packets = int(span_s * RATE_PPS)
        self.traffic = TwoWayTraffic(int(rate * span_s), packets, seed, chunk=TOTAL, rate_pps=RATE_PPS,
                                     flow_rate=rate, mean_duration_s=dur, udp_fraction=0.3)
        # a reply arrives at most one window after its packet: below every timeout, so replies
        # never legitimately find their mapping expired (and any no-mapping drop is a bug)
        shortest = min(SCALED_TIMEOUTS[k] for k in ("tcp_timeout_s", "tcp_done_timeout_s", "udp_timeout_s"))
        assert self.traffic.window_ns + self.traffic.delay_ns < shortest * 1e9
        self.ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
        self.nat = MazuNAT()
        self.nat.setup(self.ctx, port_lo=1024, port_hi=65535, max_flows=1 << 18,
                       endpoint_dependent=(mode == "edm"), **SCALED_TIMEOUTS)
        self.batches: list[Any] = []
        self.info: dict[str, Any] = {}
        self.prev_info: dict[str, Any] | None = None
        self.packets_timed = 0
        self.stats_rounds: list[dict[str, int]] = []
        self.log_bytes = 0

    def prepare(self) -> None:
        """The next round's batches (outside the timing): replies to the previous round merged
        with the next trace window, parsed, cut into batches. Keeps each packet's tuple before
        translation for the checks."""
        if self.batches:
            self.traffic.answer(self.batches)
        self.log_bytes += len(self.ctx.state.drain_chunk())
        b = self.traffic.next_input()
        assert b is not None, "trace too short for the rounds"
        b.parse()
        n = len(b)
        self.prev_info = self.info if self.batches else None
        self.info = {"id": b.packet_id.copy(), "src": _u32(b.key["src"]), "sport": b.key["sport"].copy(),
                     "dst": _u32(b.key["dst"]), "dport": b.key["dport"].copy()}
        self.batches = [b.select(np.arange(s, min(s + self.batch, n), dtype=np.uint32)) for s in range(0, n, self.batch)]
        self.pre_stats = self.nat.stats()

    def run(self, parse: bool) -> None:
        nat, ctx = self.nat, self.ctx
        if parse:
            for x in self.batches:
                x.parse()
                nat.process(x, ctx)
        else:
            for x in self.batches:
                nat.process(x, ctx)

    def warm_up(self, parse: bool) -> None:
        """Run (untimed) 1.5 mean flow durations of trace, so the live mappings are near their
        steady state when the timing starts (the figures report the measured number)."""
        while self.traffic.outbound_packets < 1.5 * WORKLOADS[self.flows][1] * RATE_PPS:
            self.prepare()
            self.run(parse)

    def record_round(self) -> None:
        s, p = self.nat.stats(), self.pre_stats
        self.stats_rounds.append({k: s[k] - p[k] for k in ("new_mappings", "expired_mappings", "translations",
                                                            "reverse_translations", "drop_pool_exhausted",
                                                            "drop_no_mapping")} | {"mappings": s["mappings"]})

    def check_round(self) -> None:
        """Every packet of the last round forwarded or dropped with a reason; outbound packets
        translated to the public address; each reply translated back to the internal endpoint of
        the packet it answers; checksums valid; the only drops are the stated ones."""
        port = np.concatenate([x.port for x in self.batches])
        drop = np.concatenate([x.drop for x in self.batches])
        ids = np.concatenate([x.packet_id for x in self.batches])
        assert np.array_equal(ids, self.info["id"])
        src = np.concatenate([_u32(x.key["src"]) for x in self.batches])
        dst = np.concatenate([_u32(x.key["dst"]) for x in self.batches])
        sport = np.concatenate([x.key["sport"] for x in self.batches])
        dport = np.concatenate([x.key["dport"] for x in self.batches])
        assert np.all((port == EXTERNAL) | (port == INTERNAL) | ((port == 0) & (drop != 0)))
        reasons = {int(r) for r in np.unique(drop[port == 0])}
        # No reply may miss its mapping: the remote host answers every translated packet, a round
        # (one window of the trace) at most late, and the window is shorter than the shortest
        # timeout, so no mapping can have expired by the time its reply arrives (asserted in
        # __init__); replies are timed when they arrive, so the NAT's clock never runs backwards.
        allowed: set[int] = set()
        if self.mode == "eim" and self.flows > 64_000:
            allowed.add(int(_core.DropReason.POOL_EXHAUSTED))
        assert reasons <= allowed, f"unexpected drops {reasons}"
        out = (self.info["src"] >> 24) == 10
        fwd = port != 0
        o = out & fwd
        assert np.all(port[o] == EXTERNAL) and np.all(src[o] == PUB) and np.all(sport[o] >= 1024)
        assert np.array_equal(dst[o], self.info["dst"][o]) and np.array_equal(dport[o], self.info["dport"][o])
        rep = ~out
        assert np.all(ids[rep] >= REPLY_ID_OFFSET)
        rep &= fwd  # the translated replies are checked below
        assert self.prev_info is not None
        order = np.argsort(self.prev_info["id"], kind="stable")
        want = ids[rep] - np.uint64(REPLY_ID_OFFSET)
        pos = order[np.minimum(np.searchsorted(self.prev_info["id"][order], want), len(order) - 1)]
        assert np.array_equal(self.prev_info["id"][pos], want)  # every reply answers a packet of the previous round
        assert np.all(port[rep] == INTERNAL)
        assert np.array_equal(dst[rep], self.prev_info["src"][pos]) and np.array_equal(dport[rep], self.prev_info["sport"][pos])
        for x in self.batches:
            assert x.verify_checksums()[x.port != 0].all()
        assert rep.sum() > 0 and o.sum() > 0


@pytest.mark.benchmark(group="mazunat-two-way")
@pytest.mark.parametrize(("flows", "size", "mode", "parse"), [
    (10_000, 1024, "eim", False), (10_000, 1024, "eim", True), (10_000, 4096, "eim", False),
    (10_000, 1024, "edm", False), (100_000, 1024, "eim", False), (100_000, 1024, "edm", False),
    (100_000, 4096, "edm", False),
], ids=lambda v: {False: "process", True: "parse+process"}.get(v, str(v)) if isinstance(v, bool) else str(v))
def test_mazunat_two_way(benchmark, flows: int, size: int, mode: str, parse: bool) -> None:
    """The headline: MazuNAT.process() on generated two-way traffic (see the module docstring)."""
    w = TwoWay(flows, size, mode)
    w.warm_up(parse)
    timed: list[int] = []

    def setup() -> None:
        if timed:
            w.record_round()
        w.prepare()
        timed.append(sum(len(x) for x in w.batches))

    benchmark.pedantic(lambda: w.run(parse), setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    w.record_round()
    w.check_round()
    rounds = w.stats_rounds[-ROUNDS:]
    pkts = float(np.median(timed[-ROUNDS:]))
    st = w.nat.stats()
    total = sum(r["translations"] + r["reverse_translations"] for r in rounds)
    exhausted = sum(r["drop_pool_exhausted"] for r in rounds)
    info: dict[str, Any] = {
        "packets_per_round": int(pkts), "batch": size, "mode": mode, "parse_in_timing": parse, "logged": True,
        "flows_target": flows, "live_mappings": st["mappings"],
        "new_mappings_per_round": int(np.median([r["new_mappings"] for r in rounds])),
        "expired_per_round": int(np.median([r["expired_mappings"] for r in rounds])),
        "reply_share": round(float(np.median([r["reverse_translations"] for r in rounds])) / pkts, 3),
        "drop_pool_exhausted_share": round(exhausted / max(1, total + exhausted), 4),
        "drop_no_mapping": sum(r["drop_no_mapping"] for r in rounds),
        "late_reply_share": round(w.traffic.late_replies / max(1, w.traffic.reply_packets), 3),
        "max_reply_lag_ms": round(w.traffic.max_reply_lag_ns / 1e6, 2),
        "log_bytes_per_packet": round(w.log_bytes / max(1, w.traffic.outbound_packets + w.traffic.reply_packets), 2),
    }
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["mpps_median"] = round(pkts / stats.stats.median / 1e6, 2)
        # the spread over the timed rounds: slowest and fastest round (median packets per round)
        info["mpps_min"] = round(pkts / stats.stats.max / 1e6, 2)
        info["mpps_max"] = round(pkts / stats.stats.min / 1e6, 2)
    benchmark.extra_info.update(info)
    assert rounds and all(r["new_mappings"] > 0 and r["expired_mappings"] > 0 for r in rounds)
    assert all(r["drop_no_mapping"] == 0 for r in rounds)  # every reply found its mapping
    if mode == "edm" or flows < 64_000:
        assert exhausted == 0


# ------------------------------------------------------------------------- steady state (labelled)


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


@pytest.mark.benchmark(group="mazunat-steady-state")
@pytest.mark.parametrize("flows", [10_000, 100_000])
@pytest.mark.parametrize("size", [1024, 8192])
def test_mazunat_steady_state(benchmark, flows: int, size: int) -> None:
    """Steady state only (labelled so): established flows, constant packet time, parse outside."""
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
    mpps_nat = rb.packets / benchmark.stats.stats.median / 1e6 if benchmark.stats else 0.0
    base_mpps, py_out, _ = python_baseline(st, pristine)
    # the baseline produced the same bytes as MazuNAT for its sample
    nat_bytes = batches[0].to_list()[: len(py_out)]
    assert [bytes(p) for p in py_out] == nat_bytes
    benchmark.extra_info.update({
        "packets": rb.packets, "flows": flows, "batch": size, "mpps_median": round(mpps_nat, 2), "steady_state": True,
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
