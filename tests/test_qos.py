"""QoS: classification (DSCP v4/v6, protocol, port ranges, first match wins), rate conformance of
the shared token buckets in packets/s and bits/s on a generated constant-rate trace (tight bounds,
per class), drops with reason POLICY, exact shared per-class totals with two racing workers, bad
config."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from _replay import _same, record_and_replay
from vnfkit import _core
from vnfkit.nfs.qos import QoS, dscp_of
from vnfkit.packets import from_scapy
from vnfkit.state import SharedState
from vnfkit.tables import make_keys
from vnfkit.runtime import Runner, iter_batches
from vnfkit.vnf import Context

E = lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # noqa: E731 (no ARP/ND lookups)
POLICY = int(_core.DropReason.POLICY)


def make(**config):
    ctx = Context(0, 1, shared=SharedState())
    q = QoS()
    q.setup(ctx, **config)
    return q, ctx


def crafted(pkts):
    for i, p in enumerate(pkts):
        p.time = i * 1e-6
    b = from_scapy(pkts)
    b.parse()
    return b


def test_classification_dscp_proto_ports_first_match_wins():
    q, ctx = make(classes=[
        {"name": "ef", "dscp": [46]},
        {"name": "dns", "proto": "udp", "dport": 53},
        {"name": "hi", "proto": 6, "dport": [22, [8000, 8999]], "sport": [[1024, 65535]]},
        {"name": "icmp", "proto": "icmp"},
    ])
    b = crafted([
        E() / IP(tos=46 << 2, src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53),  # ef wins over dns
        E() / IPv6(tc=46 << 2, src="fd00::1", dst="fd00::2") / TCP(dport=1),  # ef via IPv6 traffic class
        E() / IP(tos=(10 << 2) | 1, src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53),  # ECN bit ignored
        E() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=2000, dport=8500),
        E() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=80, dport=8500),  # sport outside the range
        E() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=2000, dport=22),
        E() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
        E() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=54),
    ])
    assert dscp_of(b).tolist() == [46, 46, 10, 0, 0, 0, 0, 0]
    assert q.classify(b).tolist() == [0, 0, 1, 2, 4, 2, 3, 4]
    q.process(b, ctx)
    assert b.port.tolist() == [1] * 8  # no rates: only counted
    cs = q.class_stats()
    assert {k: v["passed"] for k, v in cs.items()} == {"ef": 2, "dns": 1, "hi": 2, "icmp": 1, "unmatched": 2}
    assert cs["ef"]["passed_bytes"] == len(b.packet(0)) + len(b.packet(1))


def test_unmatched_drop_policy_and_parser_drops():
    q, ctx = make(classes=[{"name": "web", "proto": "tcp", "dport": 80}], unmatched="drop")
    good = E() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80)
    b = crafted([good, E() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=80), Ether(bytes(good)[:18])])
    q.process(b, ctx)
    assert b.port.tolist() == [1, 0, 0]
    assert b.drop.tolist()[:2] == [0, POLICY] and b.drop[2] == int(_core.DropReason.TRUNCATED)
    assert q.class_stats()["unmatched"]["dropped"] == 1 and q.class_stats()["web"]["passed"] == 1


def constant_rate_trace(n, pps, flows=600, seed=1):
    """n 64-byte packets at exactly `pps`: flows f%3==0 TCP/5000 with DSCP 46 (EF), f%3==1 UDP/53,
    f%3==2 TCP/80."""
    rng = np.random.default_rng(seed)
    f = np.arange(n) % flows
    rng.shuffle(f)
    src = (10 << 24) + rng.integers(1, 1 << 24, flows)
    cls = np.arange(flows) % 3
    dport = np.choose(cls, [5000, 53, 80])
    proto = np.where(cls == 1, 17, 6)
    keys = make_keys(src[f], 0xC0000201, rng.integers(1024, 65535, flows)[f], dport[f], proto[f])
    ts = (1_000_000_000 + np.arange(n) * (1e9 / pps)).astype(np.uint64)
    b = _core.build_packets(keys, np.full(n, 64, np.uint16), ts, np.full(n, 0x10, np.uint8), np.zeros(n, np.uint32))
    ef = np.flatnonzero(cls[f] == 0)
    b.data[b.offsets[ef] + 14 + 1] = 46 << 2  # TOS byte of the IPv4 header
    b.fix_checksums()
    b.parse()
    assert b.verify_checksums().all()
    return b, cls[f]


CLASSES = [
    {"name": "ef", "dscp": 46, "rate_pps": 20_000, "burst": 25},
    {"name": "dns", "proto": "udp", "dport": 53, "rate_bps": 8_000_000, "burst": 6400},  # 1 MB/s, 100 pkts
    {"name": "web", "proto": "tcp", "dport": 80},  # counted, not policed
]


def test_admitted_rate_conforms_per_class_in_pps_and_bps():
    b, cls = constant_rate_trace(90_000, 300_000)  # 0.3 s, each class offered 100 kpps
    q, ctx = make(classes=CLASSES)
    parts = list(iter_batches(b, 512))
    for part in parts:
        q.process(part, ctx)
    span_s = (int(b.ts_ns[-1]) - int(b.ts_ns[0])) / 1e9
    cs = q.class_stats()
    # ef: GCRA admits the burst then one packet per whole-ns interval (50 000 ns here)
    exp_ef = 25 + span_s * 1e9 / q.buckets[0].ns_per_token
    assert abs(cs["ef"]["passed"] - exp_ef) <= 1.5
    # dns: bytes at 1 MB/s (1000 ns per byte): burst + rate * span, within one packet
    exp_dns = 6400 + span_s * 1e9 / q.buckets[1].ns_per_token
    assert abs(cs["dns"]["passed_bytes"] - exp_dns) <= 64
    assert cs["web"] == {"passed": 30_000, "passed_bytes": 30_000 * 64, "dropped": 0, "dropped_bytes": 0}
    for name, c in zip(("ef", "dns"), (0, 1)):
        assert cs[name]["passed"] + cs[name]["dropped"] == int((cls == c).sum())
    drops = sum(int((p.drop == POLICY).sum()) for p in parts)
    assert drops == cs["ef"]["dropped"] + cs["dns"]["dropped"]
    assert all(((p.port == 0) == (p.drop == POLICY)).all() for p in parts)
    st = q.stats()
    assert st["ef.passed"] == cs["ef"]["passed"] and st["dns.dropped_bytes"] == cs["dns"]["dropped_bytes"]


def test_admitted_rate_in_each_window_is_bounded():
    """GCRA: over any window, admitted <= burst + rate * window (+1)."""
    b, cls = constant_rate_trace(30_000, 300_000, seed=2)
    q, ctx = make(classes=CLASSES[:1])
    q.process(b, ctx)
    t = b.ts_ns[(cls == 0) & (b.port == 1)].astype(np.int64)
    for w_ns in (1_000_000, 10_000_000):
        for start in range(int(t[0]), int(t[-1]), w_ns // 2):
            n = int(((t >= start) & (t < start + w_ns)).sum())
            assert n <= 25 + w_ns / 50_000 + 1


def test_runner_two_queues_exact_totals_and_conforming_rate():
    b, cls = constant_rate_trace(60_000, 300_000, seed=3)
    with Runner(QoS, queues=2, config={"classes": CLASSES}) as r:
        res = r.run(iter_batches(b, 256))
        qs = r.vnfs
    assert all(x.packets > 0 for x in res.queues)
    cs = qs[0].class_stats()
    for name, c in (("ef", 0), ("dns", 1), ("web", 2)):
        assert cs[name]["passed"] + cs[name]["dropped"] == int((cls == c).sum())
        # the workers' own counts add up to the shared totals exactly
        assert sum(x.stats()[f"{name}.passed"] for x in qs) == cs[name]["passed"]
    assert res.drops == {"policy": cs["ef"]["dropped"] + cs["dns"]["dropped"]}
    span_s = (int(b.ts_ns[-1]) - int(b.ts_ns[0])) / 1e9
    exp_ef = 25 + span_s * 20_000
    assert exp_ef * 0.97 <= cs["ef"]["passed"] <= exp_ef + 1  # racing clocks may only lose a little
    exp_dns = 6400 + span_s * 1e6
    assert exp_dns * 0.97 <= cs["dns"]["passed_bytes"] <= exp_dns + 64


@pytest.mark.parametrize("cfg, exc, field", [
    ({"classes": {"name": "x"}}, TypeError, "classes"),
    ({"classes": ["x"]}, TypeError, r"classes\[0\]"),
    ({"classes": [{"dscp": 1}]}, ValueError, r"classes\[0\].name"),
    ({"classes": [{"name": "a"}, {"name": "a"}]}, ValueError, r"classes\[1\].name"),
    ({"classes": [{"name": "unmatched"}]}, ValueError, r"classes\[0\].name"),
    ({"classes": [{"name": "a", "dscp": 64}]}, ValueError, r"classes\[0\].dscp"),
    ({"classes": [{"name": "a", "dscp": []}]}, ValueError, r"classes\[0\].dscp"),
    ({"classes": [{"name": "a", "proto": "gre"}]}, ValueError, r"classes\[0\].proto"),
    ({"classes": [{"name": "a", "dport": [[90, 80]]}]}, ValueError, r"classes\[0\].dport"),
    ({"classes": [{"name": "a", "sport": "80"}]}, TypeError, r"classes\[0\].sport"),
    ({"classes": [{"name": "a", "rate_pps": 0}]}, ValueError, r"classes\[0\].rate_pps"),
    ({"classes": [{"name": "a", "rate_bps": "1M"}]}, TypeError, r"classes\[0\].rate_bps"),
    ({"classes": [{"name": "a", "rate_pps": 1, "rate_bps": 8}]}, ValueError, r"classes\[0\]"),
    ({"classes": [{"name": "a", "burst": 5}]}, ValueError, r"classes\[0\].burst"),
    ({"classes": [{"name": "a", "rate_pps": 10, "burst": 0.5}]}, ValueError, r"classes\[0\].burst"),
    ({"classes": [{"name": "a", "color": "red"}]}, TypeError, r"classes\[0\]"),
    ({"unmatched": "police"}, ValueError, "unmatched"),
    ({"out_port": -1}, ValueError, "out_port"),
    ({"priority": True}, TypeError, "priority"),
])
def test_bad_config_names_the_field(cfg, exc, field):
    with pytest.raises(exc, match=field):
        QoS().setup(Context(0, 1, shared=SharedState()), **cfg)


def test_default_config_polices_dns_and_web():
    q, ctx = make()
    assert q.class_names == ["dns", "web", "unmatched"]
    b, _ = constant_rate_trace(3000, 300_000)
    q.process(b, ctx)
    cs = q.class_stats()
    assert cs["dns"]["passed"] + cs["dns"]["dropped"] == 1000 and cs["web"]["passed"] == 1000


def test_replay_of_racing_workers_reproduces_every_policing_decision():
    b, _ = constant_rate_trace(12_000, 300_000, seed=6)
    decided, replayed, master, backup = record_and_replay(QoS, {"classes": CLASSES}, iter_batches(b, 256))
    assert sum(len(v) for v in decided.values()) > 2 and _same(decided, replayed)
    assert backup == master  # the replayed shared state is the master's, bit for bit


def test_unparsed_batch_is_refused():
    q, ctx = make()
    with pytest.raises(ValueError, match="not parsed"):
        q.process(from_scapy([E() / IP() / UDP()]), ctx)
