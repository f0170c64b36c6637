"""AdaptiveLB: least-loaded choice (against a sequential Python reference), stickiness per flow,
destination rewrite with valid checksums, replies mapped back to the VIP, load decrements on FIN and
idle expiry, full-table drops, bad config, balance on a generated trace, and a 2-queue Runner run
with exact shared totals."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from _replay import _same, record_and_replay
from vnfkit import _core, traffic
from vnfkit.nfs.adaptive_lb import AdaptiveLB, least_loaded
from vnfkit.packets import from_scapy, to_scapy
from vnfkit.state import SharedState
from vnfkit.runtime import Runner, iter_batches
from vnfkit.vnf import Context

E = lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # noqa: E731 (no ARP/ND lookups)
VIP = "203.0.113.10"
BACKENDS = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]


class LB:
    def __init__(self, **config):
        self.shared = SharedState()
        self.ctx = Context(0, 1, shared=self.shared)
        self.lb = AdaptiveLB()
        self.lb.setup(self.ctx, **{"vip": VIP, "backends": BACKENDS, **config})

    def __call__(self, pkts, t0=0.0, dt=1e-3):
        for i, p in enumerate(pkts):
            p.time = t0 + i * dt
        b = from_scapy(pkts)
        b.parse()
        self.lb.process(b, self.ctx)
        return b, to_scapy(b)


def syn(i, flags="S", dport=80):
    return E() / IP(src=f"192.0.2.{i}", dst=VIP) / TCP(sport=10000 + i, dport=dport, flags=flags)


def assert_checksums_like_scapy(out):
    for p in out:
        fresh = Ether(bytes(p))
        del fresh[IP].chksum
        del fresh[IP].payload.chksum
        assert bytes(Ether(bytes(fresh))) == bytes(p), p.summary()


def ref_least_loaded(loads, k):
    loads, out = list(loads), []
    for _ in range(k):
        b = min(range(len(loads)), key=lambda i: (loads[i], i))
        out.append(b)
        loads[b] += 1
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(0, 120))
def test_least_loaded_matches_sequential_greedy(loads, k):
    assert least_loaded(np.array(loads), k).tolist() == ref_least_loaded(loads, k)


def test_new_flows_go_to_the_least_loaded_backend_and_stick():
    lb = LB()
    b, out = lb([syn(i) for i in range(5)])
    assert [p[IP].dst for p in out] == ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.1"]
    assert all(p[TCP].dport == 80 and p[IP].src == f"192.0.2.{i}" for i, p in enumerate(out))
    assert b.port.tolist() == [1] * 5 and b.verify_checksums().all()
    assert_checksums_like_scapy(out)
    assert lb.lb.loads().tolist() == [2, 1, 1, 1]
    # later packets of the same flows (any order, repeated) stay on their backend
    b, out = lb([syn(4, "A"), syn(2, "A"), syn(0, "PA"), syn(4, "A"), syn(1, "A")], t0=1.0)
    assert [p[IP].dst for p in out] == ["10.1.0.1", "10.1.0.3", "10.1.0.1", "10.1.0.1", "10.1.0.2"]
    assert lb.lb.loads().tolist() == [2, 1, 1, 1]
    # a new flow goes to the lowest-index least loaded backend
    _, out = lb([syn(9)], t0=2.0)
    assert out[0][IP].dst == "10.1.0.2"
    st_ = lb.lb.stats()
    assert st_["new_flows"] == 6 and st_["balanced"] == 11 and st_["backend0.flows"] == 2


def test_fin_and_idle_expiry_decrement_the_load():
    lb = LB(idle_timeout_s=30.0, tcp_close_timeout_s=2.0)
    lb([syn(i) for i in range(4)], t0=0.0)
    assert lb.lb.loads().tolist() == [1, 1, 1, 1]
    lb([syn(1, "FA")], t0=1.0)  # flow 1 (backend 1) closes
    assert lb.lb.loads().tolist() == [1, 1, 1, 1]  # not before the close timeout
    _, out = lb([syn(0, "A")], t0=3.5)  # packet time passes FIN + 2 s
    assert lb.lb.loads().tolist() == [1, 0, 1, 1] and lb.lb.stats()["flows_ended"] == 1
    _, out = lb([syn(7)], t0=3.6)
    assert out[0][IP].dst == "10.1.0.2"  # the freed backend is now the least loaded
    # idle: everything but flow 7 (last seen 3.6) and flow 0 (3.5) ends 30 s after its last packet
    lb([syn(0, "A"), syn(7, "A")], t0=31.0)
    assert lb.lb.loads().tolist() == [1, 1, 0, 0]
    lb([syn(8)], t0=70.0)  # everything idle; the new flow gets backend 0 again
    assert lb.lb.loads().tolist() == [1, 0, 0, 0]
    assert int(lb.lb.assigned.get(0)) == 2


def test_backend_ports_replies_and_passthrough():
    lb = LB(backends=["10.1.0.1:8080", "10.1.0.2:8081"])
    pkts = [
        syn(1),
        E() / IP(src="10.1.0.1", dst="192.0.2.1") / TCP(sport=8080, dport=10001, flags="SA"),  # reply
        E() / IP(src="10.1.0.1", dst="192.0.2.1") / TCP(sport=22, dport=10001),  # not the service port
        syn(2, dport=443),  # other port of the VIP
        E() / IP(src="192.0.2.3", dst=VIP) / UDP(sport=1, dport=80),  # other protocol
        E() / IPv6(src="fd00::1", dst="2001:db8::1") / TCP(sport=1, dport=80),
        E() / IP(src="192.0.2.4", dst="198.51.100.1") / TCP(sport=1, dport=80),
    ]
    before = [bytes(p) for p in pkts]
    b, out = lb(pkts)
    assert (out[0][IP].dst, out[0][TCP].dport) == ("10.1.0.1", 8080)
    assert (out[1][IP].src, out[1][TCP].sport) == (VIP, 80)
    assert [bytes(p) for p in out[2:]] == before[2:]
    assert b.port.tolist() == [1] * 7 and b.drop.tolist() == [0] * 7
    assert_checksums_like_scapy([out[0], out[1]])
    s = lb.lb.stats()
    assert (s["balanced"], s["replies"], s["passthrough"]) == (1, 1, 5)


def test_reverse_off_leaves_replies_alone():
    lb = LB(reverse=False)
    reply = E() / IP(src="10.1.0.1", dst="192.0.2.1") / TCP(sport=80, dport=10001, flags="SA")
    raw = bytes(reply)
    _, out = lb([reply])
    assert bytes(out[0]) == raw


def test_full_flow_table_drops_new_flows_with_a_reason():
    lb = LB(flow_capacity=2)
    b, out = lb([syn(1), syn(2), syn(3), syn(1, "A")])
    assert b.port.tolist() == [1, 1, 0, 1]
    assert b.drop.tolist() == [0, 0, int(_core.DropReason.TABLE_FULL), 0]
    assert lb.lb.loads().tolist() == [1, 1, 0, 0] and lb.lb.stats()["table_full"] == 1


@pytest.mark.parametrize("cfg, exc, field", [
    ({"vip": "203.0.113.300"}, ValueError, "vip"),
    ({"vip": 5}, TypeError, "vip"),
    ({"vip_port": 0}, ValueError, "vip_port"),
    ({"proto": "icmp"}, ValueError, "proto"),
    ({"proto": "sctp"}, ValueError, "proto"),
    ({"backends": []}, ValueError, "backends"),
    ({"backends": "10.1.0.1"}, TypeError, "backends"),
    ({"backends": ["10.1.0.1", "10.1.0.x"]}, ValueError, r"backends\[1\]"),
    ({"backends": ["10.1.0.1:99999"]}, ValueError, r"backends\[0\]"),
    ({"backends": ["10.1.0.1", "10.1.0.1"]}, ValueError, "backends"),
    ({"backends": ["10.1.0.1:80"], "vip_port": None}, ValueError, "backends"),
    ({"backends": [VIP]}, ValueError, "backends"),
    ({"reverse": 1}, TypeError, "reverse"),
    ({"flow_capacity": 0}, ValueError, "flow_capacity"),
    ({"idle_timeout_s": -3}, ValueError, "idle_timeout_s"),
    ({"out_port": 0}, ValueError, "out_port"),
    ({"weights": [1]}, TypeError, "weights"),
])
def test_bad_config_names_the_field(cfg, exc, field):
    with pytest.raises(exc, match=field):
        AdaptiveLB().setup(Context(0, 1, shared=SharedState()), **{"vip": VIP, **cfg})


def vip_trace(flows, packets, seed, n_clients=None):
    """A generated TCP trace whose every flow goes to VIP:80 (SYN first, FIN|ACK last)."""
    b = traffic.generate(flows, packets, seed=seed, udp_fraction=0.0)
    keys = b.key.copy()
    keys["dst"][:, :4] = np.frombuffer(ipaddress.IPv4Address(VIP).packed, dtype=np.uint8)
    keys["dport"] = 80
    out = _core.build_packets(keys, np.full(len(b), 64, np.uint16), np.ascontiguousarray(b.ts_ns),
                              np.ascontiguousarray(b.tcp_flags), np.zeros(len(b), np.uint32))
    out.parse()
    return out


def test_balance_and_stickiness_on_a_generated_trace():
    b = vip_trace(2000, 20000, seed=4)
    lb = LB(backends=[f"10.1.0.{i}" for i in range(1, 8)], idle_timeout_s=None, tcp_close_timeout_s=None)
    chosen = {}
    for part in iter_batches(b, 256):
        keys = part.key.copy()
        lb.lb.process(part, lb.ctx)
        be = part.key["dst"][:, 3].tolist()
        for k, d in zip(keys, be):
            chosen.setdefault(bytes(k), set()).add(d)
    assert len(chosen) == 2000 and all(len(s) == 1 for s in chosen.values())  # sticky
    loads = lb.lb.loads().astype(np.int64)
    assert loads.sum() == 2000 and loads.max() - loads.min() <= 1  # one worker: perfectly balanced


def test_runner_two_queues_exact_shared_totals_and_tight_balance():
    b = vip_trace(3000, 24000, seed=9)
    span = int(b.ts_ns.max() - b.ts_ns.min())
    cfg = {"vip": VIP, "backends": [f"10.1.0.{i}" for i in range(1, 6)],
           "idle_timeout_s": span / 5 / 1e9, "tcp_close_timeout_s": span / 50 / 1e9}
    shared = SharedState()
    outputs = []
    with Runner(AdaptiveLB, queues=2, config=cfg, shared=shared) as r:
        res = r.run(iter_batches(b, 256), on_output=lambda q, ob: outputs.append(ob))
        lbs = r.vnfs
    assert all(q.packets > 0 for q in res.queues) and res.dropped == 0
    assigned = np.array([lbs[0].assigned.get(i) for i in range(5)], dtype=np.int64)
    per_worker_new = sum(lb.stats()["new_flows"] for lb in lbs)
    assert assigned.sum() == per_worker_new == res.vnf_stats["new_flows"]
    # active load = flows still in the workers' tables, exactly
    assert int(lbs[0].loads().sum()) == sum(len(lb.flows) for lb in lbs)
    assert res.vnf_stats["flows_ended"] == per_worker_new - sum(len(lb.flows) for lb in lbs)
    # balance of the active flows: racing workers can overshoot by at most the new flows of their
    # concurrent batches (about 35 here); least-loaded placement corrects it with the next batch.
    active = lbs[0].loads().astype(np.int64)
    assert active.sum() > 500 and active.max() - active.min() <= 10
    # cumulative assignments are not what least-loaded placement balances (flows end on their own
    # schedule, and a backend whose flows end sooner gets more new ones): one queue gives a 1.6 %
    # spread on this trace, two racing workers 0.8-2.3 %, and 4.4 % once in CI on a loaded box
    assert assigned.max() - assigned.min() <= 0.06 * assigned.sum()
    for ob in outputs:
        assert ob.verify_checksums().all()
        assert set(ob.key["dst"][:, 3].tolist()) <= {1, 2, 3, 4, 5}


def test_replay_of_racing_workers_reproduces_every_backend_choice():
    b = vip_trace(1500, 8000, seed=12)
    span = int(b.ts_ns.max() - b.ts_ns.min())
    cfg = {"vip": VIP, "backends": BACKENDS, "idle_timeout_s": span / 4 / 1e9, "tcp_close_timeout_s": span / 40 / 1e9}
    decided, replayed, master, backup = record_and_replay(AdaptiveLB, cfg, iter_batches(b, 200))
    assert sum(len(v) for v in decided.values()) > 2 and _same(decided, replayed)
    assert backup == master


def test_unparsed_batch_is_refused():
    lb = LB()
    with pytest.raises(ValueError, match="not parsed"):
        lb.lb.process(from_scapy([syn(1)]), lb.ctx)
