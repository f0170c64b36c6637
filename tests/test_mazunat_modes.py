"""MazuNAT configuration checks, endpoint-dependent mode against a pure-Python reference, flow ids
for scale-out, snapshot/restore of a worker's own state, and replay of a recorded run."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from _replay import _same, record_and_replay

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs import load
from vnfkit.nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
from vnfkit.state import SharedState
from vnfkit.tables import make_keys
from vnfkit.vnf import Context, iter_batches

PUB = 0xC0000201
NUMERIC = ["port_lo", "port_hi", "icmp_id_lo", "icmp_id_hi", "tcp_timeout_s", "tcp_done_timeout_s",
           "udp_timeout_s", "icmp_timeout_s", "gc_interval_s", "max_flows"]


def nat(**cfg: object) -> tuple[MazuNAT, Context]:
    ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
    n = MazuNAT()
    n.setup(ctx, **cfg)
    return n, ctx


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("value", [1e11, 2**70, math.inf, -math.inf, math.nan, -1, 0, 1e300])
def test_every_numeric_key_is_range_checked(key: str, value: float) -> None:
    if key.endswith("_s") and value == 1e11:
        pass  # 1e11 s (3 000 years) is out of range for a timeout too
    with pytest.raises(ValueError, match=key) as info:
        nat(**{key: value})
    assert "\n" not in str(info.value)


def test_huge_or_infinite_timeout_from_json_is_a_value_error() -> None:
    for text in ('{"tcp_timeout_s": 1e11}', '{"tcp_timeout_s": Infinity}', '{"udp_timeout_s": NaN}'):
        cfg = json.loads(text)
        with pytest.raises(ValueError, match=next(iter(cfg))):
            nat(**cfg)


@pytest.mark.parametrize("key", ["affinity", "endpoint_dependent"])
@pytest.mark.parametrize("value", ["no", "yes", "false", 0, 1, None, [True]])
def test_switches_must_be_real_booleans(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        nat(**{key: value})


def test_json_booleans_are_accepted() -> None:
    cfg = json.loads('{"affinity": false, "endpoint_dependent": true}')
    n, _ = nat(**cfg)
    assert n.edm is not None and not n.affinity


def test_cli_prints_one_line_for_an_infinite_timeout(tmp_path) -> None:
    trace = tmp_path / "t.pcap"
    traffic.write_trace(trace, 20, 100, seed=1)
    for i, text in enumerate(['{"tcp_timeout_s": Infinity}', '{"affinity": "no"}']):
        cfg = tmp_path / f"c{i}.json"
        cfg.write_text(text)
        r = subprocess.run([sys.executable, "-m", "vnfkit", "run", "mazunat", "--in", str(trace), "--out",
                            str(tmp_path / "o.pcap"), "--config", str(cfg)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and next(iter(json.loads(text))) in lines[0], r.stderr


def test_registry_still_loads_the_package() -> None:
    cls, defaults = load("mazunat")
    assert cls is MazuNAT and defaults["endpoint_dependent"] is False


# ------------------------------------------------------------------------------ scale-out ids


def test_active_in_range_finds_the_nat_flows() -> None:
    """The outbound entries carry the batch's direction-independent flow id, so a range query
    (migration avoidance's Fold(A)) finds exactly the NAT's flows in that range."""
    b = traffic.generate(400, 3000, seed=5, udp_fraction=0.3)
    cl = MultiQueueClassifier(1)
    n, ctx = nat()
    for part in iter_batches(b, 500):
        part.parse()
        cl.classify(part)
        n.process(part, ctx)
        assert (part.port == EXTERNAL).all()
    fid = {}
    b.parse()
    cl.classify(b)
    for k, f in zip(b.key.view(np.dtype((np.void, 40))).tolist(), b.flow_id.tolist()):
        fid[k] = f
    assert len(fid) == 400 and len(n.out) == 400
    lo, hi = 0, 1 << 31
    want = {k for k, f in fid.items() if lo <= f <= hi}
    got = n.out.active_in_range(lo, hi)
    assert {bytes(k) for k in got.view(np.dtype((np.void, 40)))} == want
    assert 0 < len(want) < 400  # the range really splits the flows
    assert len(n.out.active_in_range(0, 0xFFFFFFFF)) == 400


# ------------------------------------------------------------------- endpoint-dependent mode


def _mix(x: int) -> int:
    m = (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


class RefEdm:
    """Pure-Python reference of endpoint-dependent port choice on one worker (no affinity): a new
    flow's candidate r is lo + mix(seed + r * golden) mod n; the first candidate whose reply key
    (remote, rport, port, proto) is unused wins; new flows of one batch try candidate r in rounds
    (TCP flows before UDP flows, each in packet order)."""

    def __init__(self, lo: int, hi: int, tries: int = 16) -> None:
        self.lo, self.n, self.tries = lo, hi - lo + 1, tries
        self.port: dict[tuple, int] = {}       # flow -> public port
        self.used: set[tuple] = set()          # reply keys in use

    def seed(self, f: tuple) -> int:
        src, sport, dst, dport, proto = f
        m = (1 << 64) - 1
        return ((src << 32) ^ (sport << 16) ^ ((dst * 0x100000001B3) & m) ^ dport ^ (proto << 56)) & m

    def batch(self, flows: list[tuple]) -> dict[tuple, int | None]:
        new = []
        for f in flows:
            if f not in self.port and f not in new:
                new.append(f)
        new.sort(key=lambda f: 0 if f[4] == 6 else 1)  # stable: TCP first, packet order kept
        got: dict[tuple, int | None] = {f: None for f in new}
        pending = list(new)
        for r in range(self.tries):
            still = []
            for f in pending:
                p = self.lo + _mix((self.seed(f) + r * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) % self.n
                rk = (f[2], f[3], p, f[4])
                if rk in self.used:
                    still.append(f)
                else:
                    self.used.add(rk)
                    got[f] = p
            pending = still
        for f, p in got.items():
            if p is not None:
                self.port[f] = p
        return got


def _flows(rng: np.random.Generator, n: int, hosts: int, remotes: int) -> list[tuple]:
    src = 0x0A000000 + rng.integers(1, hosts + 1, n)
    sport = rng.integers(1024, 1030, n)
    dst = 0xC6120000 + rng.integers(0, remotes, n)
    dport = rng.choice([53, 80], n)
    proto = rng.choice([6, 17], n)
    return [tuple(int(v) for v in t) for t in zip(src, sport, dst, dport, proto)]


def _batch_of(flows: list[tuple], t: int, first_id: int) -> _core.PacketBatch:
    a = np.array(flows, dtype=np.int64).reshape(-1, 5)
    keys = make_keys(a[:, 0].astype(np.uint32), a[:, 2].astype(np.uint32), a[:, 1].astype(np.uint16),
                     a[:, 3].astype(np.uint16), a[:, 4].astype(np.uint8))
    b = _core.build_packets(keys, np.full(len(a), 64, np.uint16), np.full(len(a), t, np.uint64),
                            np.where(a[:, 4] == 6, 0x10, 0).astype(np.uint8), np.zeros(len(a), np.uint32))
    b.packet_id[:] = np.arange(first_id, first_id + len(a), dtype=np.uint64)
    b.parse()
    return b


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_endpoint_dependent_ports_match_the_reference(seed: int) -> None:
    # a tiny port range (8 ports) and few remotes, so reuse, collisions and exhaustion all happen
    lo, hi = 40000, 40007
    n, ctx = nat(endpoint_dependent=True, port_lo=lo, port_hi=hi)
    ref = RefEdm(lo, hi)
    rng = np.random.default_rng(seed)
    pid = 0
    for rnd in range(6):
        flows = _flows(rng, 40, hosts=6, remotes=3)
        b = _batch_of(flows, 10**9 * rnd, pid)
        pid += len(flows)
        n.process(b, ctx)
        want = ref.batch(flows)
        for i, f in enumerate(flows):
            p = ref.port.get(f)
            if p is None:
                assert want.get(f, 0) is None
                assert b.port[i] == 0 and b.drop[i] == _core.DropReason.POOL_EXHAUSTED
            else:
                assert b.port[i] == EXTERNAL and int(b.key["sport"][i]) == p
        # replies to every live mapping come back to their own internal endpoint
        live = list(ref.port.items())
        rk = make_keys(np.array([f[2] for f, _ in live], np.uint32), np.full(len(live), PUB, np.uint32),
                       np.array([f[3] for f, _ in live], np.uint16), np.array([p for _, p in live], np.uint16),
                       np.array([f[4] for f, _ in live], np.uint8))
        rb = _core.build_packets(rk, np.full(len(live), 64, np.uint16), np.full(len(live), 10**9 * rnd, np.uint64),
                                 np.where(rk["proto"] == 6, 0x10, 0).astype(np.uint8), np.zeros(len(live), np.uint32))
        rb.packet_id[:] = np.arange(pid, pid + len(live), dtype=np.uint64)
        pid += len(live)
        rb.parse()
        n.process(rb, ctx)
        assert (rb.port == INTERNAL).all()
        got = list(zip(rb.key["dst"][:, :4].copy().view(">u4").reshape(-1).tolist(), rb.key["dport"].tolist()))
        assert got == [(f[0], f[1]) for f, _ in live]
        assert rb.verify_checksums().all()
    assert n.stats()["mappings"] == len(ref.port)
    # the point of the mode: fewer ports than live mappings
    assert len(ref.port) > hi - lo + 1


def test_endpoint_dependent_holds_200k_flows_on_one_address() -> None:
    """200 000 concurrent flows to 4 000 remote endpoints through one public address and 64 k
    ports: no exhaustion drop (an endpoint-independent pool holds at most 64 512 per protocol)."""
    rng = np.random.default_rng(9)
    n_flows = 200_000
    src = 0x0A000000 + rng.choice(1 << 22, n_flows, replace=False).astype(np.uint32)
    dst = 0xC6120000 + rng.integers(0, 2000, n_flows).astype(np.uint32)
    dport = rng.choice(np.array([80, 443], np.uint16), n_flows)
    keys = make_keys(src, dst, rng.integers(1024, 65535, n_flows).astype(np.uint16), dport,
                     np.full(n_flows, 17, np.uint8))
    n, ctx = nat(endpoint_dependent=True, port_lo=1024, port_hi=65535, max_flows=1 << 18)
    ports = []
    for s in range(0, n_flows, 8192):
        k = keys[s:s + 8192]
        b = _core.build_packets(k, np.full(len(k), 64, np.uint16), np.full(len(k), 5, np.uint64),
                                np.zeros(len(k), np.uint8), np.zeros(len(k), np.uint32))
        b.packet_id[:] = np.arange(s, s + len(k), dtype=np.uint64)
        b.parse()
        n.process(b, ctx)
        assert (b.port == EXTERNAL).all(), b.drop_counts()
        ports.append(b.key["sport"].copy())
    st = n.stats()
    assert st["mappings"] == n_flows and st["drop_pool_exhausted"] == 0
    p = np.concatenate(ports)
    pairs = set(zip(dst.tolist(), dport.tolist(), p.tolist()))
    assert len(pairs) == n_flows  # no two flows share a reply tuple


# --------------------------------------------------------------------------- snapshot / replay


def test_snapshot_restore_continues_identically() -> None:
    """A second instance restored from a snapshot (and the shared state's image) makes the same
    decisions; packets of the mappings in the snapshot get byte-identical output. (New mappings may
    get other ports: the shared pool's allocation cursor is not part of its image.)"""
    b = traffic.generate(300, 4000, seed=8, udp_fraction=0.4)
    parts = list(iter_batches(b, 500))
    cfg = {"udp_timeout_s": 0.0005, "gc_interval_s": 0.0001}
    a, actx = nat(**cfg)
    for p in parts[:4]:
        p.parse()
        a.process(p, actx)
    image = a.snapshot()
    pool_image = actx.shared.snapshot()
    known = {bytes(k) for k in a.out.to_numpy()["key"].view(np.dtype((np.void, 40)))}
    rest = [p.select(np.arange(len(p), dtype=np.uint32)) for p in parts[4:]]
    for p in parts[4:]:
        p.parse()
        a.process(p, actx)
    shared = SharedState()
    ctx = Context(0, 1, shared=shared, classifier=MultiQueueClassifier(1))
    c = MazuNAT()
    c.setup(ctx, **cfg)
    shared.restore(pool_image)
    c.restore(image)
    assert c.stats() == {**image["counters"], "mappings": len(c.out), "pool_in_use": len(c.out)}
    assert len(c.out) == len(known) > 0
    compared = 0
    for p, q in zip(parts[4:], rest):
        q.parse()
        pre = [bytes(k) for k in q.key.view(np.dtype((np.void, 40))).reshape(-1)]
        c.process(q, ctx)
        assert np.array_equal(p.port, q.port) and np.array_equal(p.drop, q.drop)
        pl, ql = p.to_list(), q.to_list()
        for i, k in enumerate(pre):
            if k in known:
                assert pl[i] == ql[i]
                compared += 1
    assert compared > 200
    sa, sc = a.stats(), c.stats()
    assert sa == sc and c.next_gc == a.next_gc


def test_replay_reproduces_decisions_and_state() -> None:
    """Two workers racing on the shared pools; each worker's log replayed on a fresh SharedState
    gives the same ports, drops and bytes, and a bit-identical shared-state image."""
    trace = traffic.generate(600, 6000, seed=12, udp_fraction=0.3)
    batches = list(iter_batches(trace, 512))
    cfg = {"udp_timeout_s": 0.001, "gc_interval_s": 0.0002, "port_lo": 60000, "port_hi": 60400}
    decided, replayed, master, backup = record_and_replay(MazuNAT, cfg, batches, queues=2)
    assert sum(len(v) for v in decided.values()) > 0
    assert _same(decided, replayed) and backup == master

