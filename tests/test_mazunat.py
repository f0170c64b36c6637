"""MazuNAT behaviour on crafted packets (scapy): translations, replies, forwards, drops, timeouts,
pool exhaustion, control-state updates while traffic flows, bad configuration."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs.mazunat import DEFAULTS, EXTERNAL, INTERNAL, RULES, MazuNAT, NatRules, publish_rules
from vnfkit.packets import from_scapy, to_scapy
from vnfkit.state import SharedState
from vnfkit.runtime import Runner, iter_batches
from vnfkit.vnf import Context

PUB = "192.0.2.1"
S = 1_000_000_000
DR = _core.DropReason


class Nat:
    """One MazuNAT instance driven directly (one queue), with packet ids and times handed out."""

    def __init__(self, **cfg: object) -> None:
        self.ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
        self.nat = MazuNAT()
        self.nat.setup(self.ctx, **cfg)
        self.next_id = 0

    def run(self, pkts: list, t: float = 0.0) -> tuple[_core.PacketBatch, list]:
        for p in pkts:
            p.time = t
        b = from_scapy(pkts)
        b.packet_id[:] = np.arange(self.next_id, self.next_id + len(b), dtype=np.uint64)
        self.next_id += len(b)
        b.parse()
        self.nat.process(b, self.ctx)
        return b, to_scapy(b)


def out_tcp(src: str = "10.1.2.3", sport: int = 1234, dst: str = "198.51.100.7", dport: int = 80,
            flags: str = "A") -> Ether:
    return Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)


def reply_of(p: Ether, flags: str = "A") -> Ether:
    ip = p[IP]
    if p.haslayer(TCP):
        return Ether() / IP(src=ip.dst, dst=ip.src) / TCP(sport=ip[TCP].dport, dport=ip[TCP].sport, flags=flags)
    if p.haslayer(UDP):
        return Ether() / IP(src=ip.dst, dst=ip.src) / UDP(sport=ip[UDP].dport, dport=ip[UDP].sport) / bytes(ip[UDP].payload)
    return Ether() / IP(src=ip.dst, dst=ip.src) / ICMP(type=0, id=ip[ICMP].id, seq=ip[ICMP].seq)


def checksums_ok(p: Ether) -> bool:
    """Recompute with scapy and compare with what the NAT wrote."""
    raw = Ether(bytes(p))
    fresh = raw.copy()
    del fresh[IP].chksum
    l4 = fresh[IP].payload
    if hasattr(l4, "chksum"):
        del l4.chksum
    fresh = Ether(bytes(fresh))
    return raw[IP].chksum == fresh[IP].chksum and getattr(raw[IP].payload, "chksum", None) == \
        getattr(fresh[IP].payload, "chksum", None)


def test_outbound_translation_and_replies() -> None:
    n = Nat()
    pk = [out_tcp(flags="S"),
          Ether() / IP(src="10.9.9.9", dst="203.0.113.5") / UDP(sport=5353, dport=53) / b"q",
          Ether() / IP(src="10.1.2.3", dst="198.51.100.7") / ICMP(type=8, id=77, seq=3)]
    b, out = n.run(pk)
    assert b.port.tolist() == [EXTERNAL] * 3 and b.drop.tolist() == [0, 0, 0]
    assert all(p[IP].src == PUB for p in out)
    assert 50000 <= out[0][TCP].sport <= 65535 and 50000 <= out[1][UDP].sport <= 65535
    assert 50000 <= out[2][ICMP].id <= 65535
    assert out[0][TCP].dport == 80 and out[1][UDP].dport == 53 and out[2][IP].dst == "198.51.100.7"
    assert all(checksums_ok(p) for p in out)
    # the same flow again keeps its mapping
    b2, out2 = n.run([out_tcp()], 1.0)
    assert out2[0][TCP].sport == out[0][TCP].sport
    # replies are translated back to the original tuple
    b3, back = n.run([reply_of(p) for p in out], 2.0)
    assert b3.port.tolist() == [INTERNAL] * 3
    assert (back[0][IP].dst, back[0][TCP].dport) == ("10.1.2.3", 1234)
    assert (back[1][IP].dst, back[1][UDP].dport, bytes(back[1][UDP].payload)) == ("10.9.9.9", 5353, b"q")
    assert (back[2][IP].dst, back[2][ICMP].id, back[2][ICMP].seq) == ("10.1.2.3", 77, 3)
    assert all(checksums_ok(p) for p in back)
    s = n.nat.stats()
    assert s["translations"] == 4 and s["reverse_translations"] == 3 and s["new_mappings"] == 3
    assert s["mappings"] == 3


def test_distinct_flows_get_distinct_ports() -> None:
    n = Nat()
    pk = [out_tcp(sport=1000 + i) for i in range(50)] + [out_tcp(src="10.0.0.9", sport=1000)]
    _, out = n.run(pk)
    ports = [p[TCP].sport for p in out]
    assert len(set(ports)) == len(ports)


def test_reply_tuple_must_match() -> None:
    n = Nat()
    _, out = n.run([out_tcp(flags="S")])
    r = reply_of(out[0])
    wrong_port = r.copy()
    wrong_port[TCP].sport = 81
    wrong_addr = r.copy()
    wrong_addr[IP].src = "198.51.100.8"
    wrong_nat = r.copy()
    wrong_nat[TCP].dport = out[0][TCP].sport + 1
    as_udp = Ether() / IP(src=r[IP].src, dst=PUB) / UDP(sport=80, dport=out[0][TCP].sport)
    b, _ = n.run([wrong_port, wrong_addr, wrong_nat, as_udp, r])
    assert b.port.tolist() == [0, 0, 0, 0, INTERNAL]
    assert b.drop.tolist() == [DR.NO_MAPPING] * 4 + [0]
    assert n.nat.stats()["drop_no_mapping"] == 4


def test_port_forwards_and_their_replies() -> None:
    n = Nat()
    inb = [Ether() / IP(src="203.0.113.9", dst=PUB) / TCP(sport=40000, dport=p, flags="S") for p in (22, 80, 443, 8080)]
    b, out = n.run(inb)
    assert b.port.tolist() == [INTERNAL] * 3 + [0]
    assert b.drop.tolist() == [0, 0, 0, DR.NO_MAPPING]
    assert [(p[IP].dst, p[TCP].dport) for p in out[:3]] == [("10.0.0.2", 22), ("10.0.0.2", 80), ("10.0.0.2", 443)]
    assert all(checksums_ok(p) for p in out[:3])
    # the server's answer leaves from the public address and the public port
    ans = Ether() / IP(src="10.0.0.2", dst="203.0.113.9") / TCP(sport=22, dport=40000, flags="SA")
    b2, out2 = n.run([ans])
    assert b2.port.tolist() == [EXTERNAL]
    assert (out2[0][IP].src, out2[0][TCP].sport) == (PUB, 22) and checksums_ok(out2[0])
    s = n.nat.stats()
    assert s["forwards"] == 3 and s["forward_replies"] == 1 and s["new_mappings"] == 0
    # custom forward with a different internal port, UDP
    n2 = Nat(forwards=[{"proto": "udp", "port": 5000, "to": "10.7.0.1", "to_port": 53}])
    b3, out3 = n2.run([Ether() / IP(src="203.0.113.9", dst=PUB) / UDP(sport=1, dport=5000),
                       Ether() / IP(src="203.0.113.9", dst=PUB) / TCP(sport=1, dport=22)])
    assert b3.port.tolist() == [INTERNAL, 0]
    assert (out3[0][IP].dst, out3[0][UDP].dport) == ("10.7.0.1", 53)


def test_drops_with_reasons() -> None:
    n = Nat()
    pk = [
        Ether() / IP(src="203.0.113.9", dst=PUB) / TCP(sport=1, dport=50000),       # unsolicited
        Ether() / IP(src="203.0.113.9", dst=PUB) / UDP(sport=1, dport=50001),       # unsolicited
        Ether() / IP(src="203.0.113.9", dst=PUB) / GRE(),                           # not TCP/UDP/ICMP
        Ether() / IP(src="203.0.113.9", dst=PUB) / ICMP(type=8, id=5),              # echo request in
        Ether() / IP(src="203.0.113.9", dst=PUB) / ICMP(type=0, id=50000),          # unsolicited reply
        Ether() / IP(src="203.0.113.9", dst=PUB) / ICMP(type=3, code=3),            # ICMP error in
        Ether() / IPv6(src="fd00::1", dst="2001:db8::1") / TCP(sport=1, dport=80),  # IPv6
        Ether() / IP(src="10.0.0.5", dst=PUB) / TCP(sport=1, dport=80),             # internal -> public
        Ether() / IP(src="10.0.0.5", dst="10.0.0.6") / TCP(sport=1, dport=80),      # internal -> internal
        Ether() / IP(src="203.0.113.9", dst="203.0.113.10") / TCP(sport=1, dport=80),  # not ours
        Ether() / IP(src="10.0.0.5", dst="198.51.100.1") / GRE(),                   # outbound GRE
        Ether() / IP(src="10.0.0.5", dst="198.51.100.1") / ICMP(type=3, code=1),    # outbound ICMP error
        Ether() / IP(src="10.0.0.5", dst="198.51.100.1", flags="MF", frag=10) / (b"x" * 16),  # non-first frag
    ]
    b, _ = n.run(pk)
    assert b.port.tolist() == [0] * len(pk)
    assert b.drop.tolist() == [DR.NO_MAPPING, DR.NO_MAPPING, DR.POLICY, DR.POLICY, DR.NO_MAPPING, DR.POLICY,
                               DR.POLICY, DR.POLICY, DR.POLICY, DR.POLICY, DR.POLICY, DR.POLICY, DR.POLICY]
    s = n.nat.stats()
    assert s["drop_no_mapping"] == 3 and s["drop_proto"] == 5 and s["drop_ipv6"] == 1
    assert s["drop_spoofed"] == 1 and s["drop_not_routed"] == 2 and s["drop_fragment"] == 1
    assert s["mappings"] == 0


def test_deny_rules() -> None:
    n = Nat(deny=[{"dst": "198.51.100.0/24", "proto": "tcp", "ports": [80, 81]}, {"dst": "203.0.113.7/32"}])
    b, _ = n.run([out_tcp(dport=80), out_tcp(dport=443), out_tcp(dst="198.51.101.1", dport=80),
                  Ether() / IP(src="10.0.0.1", dst="203.0.113.7") / UDP(sport=1, dport=9)])
    assert b.port.tolist() == [0, EXTERNAL, EXTERNAL, 0]
    assert b.drop.tolist() == [DR.POLICY, 0, 0, DR.POLICY]
    assert n.nat.stats()["drop_denied"] == 2


def test_udp_timeout_expiry_and_port_reuse() -> None:
    n = Nat(udp_timeout_s=10, gc_interval_s=1)
    u = Ether() / IP(src="10.0.0.1", dst="198.51.100.1") / UDP(sport=7, dport=9)
    _, o1 = n.run([u.copy()], 0)
    r = reply_of(o1[0])
    b, _ = n.run([r.copy()], 9.0)       # refreshes: now expires at 19 s
    assert b.port.tolist() == [INTERNAL]
    b, _ = n.run([r.copy()], 18.9)
    assert b.port.tolist() == [INTERNAL]
    b, _ = n.run([r.copy()], 28.9)      # 10 s of silence: expired
    assert b.drop.tolist() == [DR.NO_MAPPING]
    assert n.nat.stats()["expired_mappings"] == 1 and n.nat.stats()["mappings"] == 0
    assert n.nat.pools.udp.allocated_count == 0
    _, o2 = n.run([u.copy()], 30)       # a new mapping
    assert n.nat.stats()["new_mappings"] == 2


def test_tcp_done_timeout_after_fin_and_established_timeout() -> None:
    n = Nat(tcp_timeout_s=1000, tcp_done_timeout_s=5, gc_interval_s=1)
    _, a = n.run([out_tcp(sport=1, flags="S"), out_tcp(sport=2, flags="S")], 0)
    n.run([reply_of(a[0], "SA"), reply_of(a[1], "SA")], 0.1)
    n.run([out_tcp(sport=1, flags="FA")], 1)  # flow 1 closes
    b, _ = n.run([reply_of(a[0], "A"), reply_of(a[1], "A")], 5.9)
    assert b.port.tolist() == [INTERNAL, INTERNAL]
    b, _ = n.run([reply_of(a[0], "A"), reply_of(a[1], "A")], 11.0)  # 5.1 s after the last packet
    assert b.port.tolist() == [0, INTERNAL] and b.drop.tolist() == [DR.NO_MAPPING, 0]
    b, _ = n.run([reply_of(a[1], "R")], 500)  # RST from the remote side closes flow 2
    assert b.port.tolist() == [INTERNAL]
    b, _ = n.run([reply_of(a[1], "A")], 506)
    assert b.drop.tolist() == [DR.NO_MAPPING]
    assert n.nat.stats()["mappings"] == 0 and n.nat.pools.tcp.allocated_count == 0


def test_expiry_inside_one_batch_is_decided_per_packet_time() -> None:
    n = Nat(udp_timeout_s=10, gc_interval_s=1000)  # no GC: staleness must be detected per packet
    u = Ether() / IP(src="10.0.0.1", dst="198.51.100.1") / UDP(sport=7, dport=9)
    _, o1 = n.run([u.copy()], 0)
    p1 = o1[0][UDP].sport
    _, o2 = n.run([u.copy()], 11)
    assert n.nat.stats()["new_mappings"] == 2 and n.nat.stats()["expired_mappings"] == 1
    assert n.nat.pools.udp.allocated_count == 1
    assert o2[0][IP].src == PUB and o2[0][UDP].sport in range(50000, 65536)
    assert p1 != 0


def test_pool_exhaustion_counted_then_ports_reused() -> None:
    n = Nat(port_lo=60000, port_hi=60003, udp_timeout_s=5, gc_interval_s=1)
    flows = [Ether() / IP(src="10.0.0.1", dst="198.51.100.1") / UDP(sport=100 + i, dport=9) for i in range(6)]
    b, out = n.run([f.copy() for f in flows] + [flows[5].copy()], 0)
    assert b.port.tolist() == [EXTERNAL] * 4 + [0, 0, 0]
    assert b.drop.tolist() == [0] * 4 + [DR.POOL_EXHAUSTED] * 3
    assert sorted(p[UDP].sport for p in out[:4]) == [60000, 60001, 60002, 60003]
    s = n.nat.stats()
    assert s["drop_pool_exhausted"] == 3 and s["pool_exhausted_events"] == 2 and s["mappings"] == 4
    # still exhausted one second later
    b, _ = n.run([flows[4].copy()], 1)
    assert b.drop.tolist() == [DR.POOL_EXHAUSTED]
    # after the timeout the ports come back and are handed out again
    b, out = n.run([flows[4].copy(), flows[5].copy()], 7)
    assert b.port.tolist() == [EXTERNAL, EXTERNAL]
    assert {p[UDP].sport for p in out} <= {60000, 60001, 60002, 60003}
    assert n.nat.stats()["mappings"] == 2 and n.nat.pools.udp.allocated_count == 2


def test_rules_update_while_traffic_flows_is_atomic_per_batch() -> None:
    """A writer flips between two rule sets while the runner forwards batches; every processed
    batch must show the decisions of exactly one of them."""
    a = {"deny": [{"dst": "198.51.100.0/24"}], "forwards": [{"proto": "tcp", "port": 22, "to": "10.0.0.2"}]}
    b_ = {"deny": [], "forwards": [{"proto": "tcp", "port": 22, "to": "10.0.0.3"}]}
    pk = []
    for i in range(16):
        pk.append(out_tcp(sport=2000 + i, dst="198.51.100.7"))
        pk.append(Ether() / IP(src="203.0.113.9", dst=PUB) / TCP(sport=3000 + i, dport=22))
    base = from_scapy(pk)
    seen: set[str] = set()
    mixed = []

    def on_output(q: int, out: _core.PacketBatch) -> None:
        outb = out.port[0::2]
        inb_dst = out.key["dst"][1::2, 3]  # last byte of the (rewritten) internal address
        if np.all(outb == 0) and np.all(inb_dst == 2):
            seen.add("a")
        elif np.all(outb == EXTERNAL) and np.all(inb_dst == 3):
            seen.add("b")
        else:
            mixed.append((out.port.tolist(), inb_dst.tolist()))

    with Runner(MazuNAT, queues=1, config={"deny": a["deny"], "forwards": a["forwards"]}) as r:
        stop = threading.Event()

        def writer() -> None:
            flip = False
            while not stop.is_set():
                publish_rules(r, **(b_ if flip else a))
                flip = not flip
                time.sleep(0.0003)

        th = threading.Thread(target=writer)
        th.start()
        try:
            def batches():
                for _ in range(400):
                    bb = base.select(np.arange(len(base), dtype=np.uint32))
                    yield bb
            r.run(batches(), on_output=on_output)
        finally:
            stop.set()
            th.join()
        assert r.control.version(RULES) > 10
    assert not mixed
    assert seen == {"a", "b"}


def test_rules_pickle_as_equal_frozen_rules() -> None:
    rules = NatRules([{"proto": "udp", "port": 53, "to": "10.0.0.5", "to_port": 5353}],
                     [{"dst": "198.51.100.0/24", "proto": "tcp", "ports": [80, 90]}], version=4)
    back = pickle.loads(pickle.dumps(rules))
    assert type(back) is NatRules and back.version == 4
    assert back.forward_specs() == rules.forward_specs() and back.deny_specs() == rules.deny_specs()
    assert np.array_equal(back._fwd_rev, rules._fwd_rev) and np.array_equal(back._deny_arr, rules._deny_arr)
    with pytest.raises(AttributeError):
        back.version = 5  # type: ignore[misc]
    assert not back._fwd_in.flags.writeable


def test_rules_published_mid_run_reach_every_worker_process() -> None:
    """publish_rules on a process runner while it forwards: both worker processes adopt the new
    deny list between two batches (every batch shows one rule set: all forwarded or all denied)."""
    trace = traffic.generate(flows=400, packets=40_000, seed=5)  # IPv4 TCP/UDP to 198.18.0.0/15
    denied: dict[int, int] = {0: 0, 1: 0}
    mixed: list[int] = []
    published: list[NatRules] = []

    def on_output(q: int, out: _core.PacketBatch) -> None:
        port, drop = out.port, out.drop
        if np.all(port == EXTERNAL):
            pass
        elif np.all((port == 0) & (drop == int(DR.POLICY))):
            denied[q] += len(out)
        else:
            mixed.append(q)
        if not published and len(out):
            published.append(publish_rules(r, deny=[{"dst": "198.18.0.0/15"}]))

    with Runner(MazuNAT, backend="process", queues=2, batch_size=64, flush_us=20, logged=False) as r:
        assert r.control.get(RULES).version == 0  # published by the workers' setup, seen here
        for _ in range(50):
            r.run(iter_batches(trace.select(np.arange(len(trace), dtype=np.uint32)), 512), on_output=on_output)
            if denied[0] and denied[1]:
                break
        assert r.control.get(RULES).version == 1 and r.control.get(RULES).deny_specs()[0]["dst"] == "198.18.0.0/15"
    assert published and not mixed
    assert denied[0] > 0 and denied[1] > 0  # the new rules applied in both worker processes


def test_rules_objects_are_immutable_and_validated() -> None:
    rules = NatRules(DEFAULTS["forwards"])
    with pytest.raises(AttributeError):
        rules.deny = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        rules._fwd_in[0, 22] = 0
    with pytest.raises(ValueError, match="forwarded twice"):
        NatRules([{"proto": "tcp", "port": 22, "to": "10.0.0.2"}, {"proto": "tcp", "port": 22, "to": "10.0.0.3"}])
    with pytest.raises(ValueError, match="not in internal_net"):
        NatRules([{"proto": "tcp", "port": 22, "to": "8.8.8.8"}])
    with pytest.raises(ValueError, match="proto"):
        NatRules([{"proto": "sctp", "port": 22, "to": "10.0.0.2"}])
    with pytest.raises(ValueError, match="unknown keys"):
        NatRules(deny=[{"dst": "1.0.0.0/8", "port": 3}])
    with pytest.raises(ValueError, match="lo > hi"):
        NatRules(deny=[{"dst": "1.0.0.0/8", "ports": [9, 3]}])


@pytest.mark.parametrize("cfg, err", [
    ({"nope": 1}, TypeError),
    ({"internal_net": "10.0.0.1/8"}, ValueError),
    ({"public_addr": "10.0.0.1"}, ValueError),
    ({"public_addr": "not-an-ip"}, ValueError),
    ({"port_lo": 70000}, ValueError),
    ({"port_lo": 6000, "port_hi": 5000}, ValueError),
    ({"udp_timeout_s": 0}, ValueError),
    ({"tcp_timeout_s": "1h"}, ValueError),
    ({"max_flows": 0}, ValueError),
    ({"forwards": [{"proto": "tcp", "port": 0, "to": "10.0.0.2"}]}, ValueError),
    ({"deny": ["8.8.8.8"]}, TypeError),
])
def test_bad_config(cfg: dict, err: type) -> None:
    with pytest.raises(err):
        Nat(**cfg)


# ------------------------------------------------------------------ property test vs a reference


class RefNat:
    """Pure-Python reference: one port per (src, sport, dst, dport), lowest free port first is
    not assumed -- only the decision (pass/drop) and the reverse mapping are compared."""

    def __init__(self) -> None:
        self.out: dict[tuple, int] = {}
        self.back: dict[tuple, tuple] = {}

    def outbound(self, key: tuple, port: int) -> None:
        if key not in self.out:
            self.out[key] = port
            src, sport, dst, dport = key
            self.back[(dst, dport, port)] = (src, sport)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 2), st.booleans(),
                          st.integers(0, 1)), min_size=1, max_size=40))
def test_against_reference(ops: list) -> None:
    n = Nat()
    ref = RefNat()
    for host, sport, dst, inbound, extra in ops:
        key = (f"10.0.0.{host + 1}", 1000 + sport, f"198.51.100.{dst + 1}", 80)
        if not inbound:
            b, out = n.run([out_tcp(key[0], key[1], key[2], key[3])])
            assert b.port.tolist() == [EXTERNAL]
            port = out[0][TCP].sport
            if key in ref.out:
                assert ref.out[key] == port
            else:
                assert port not in ref.out.values()
            ref.outbound(key, port)
        else:
            if not ref.out:
                continue
            keys = sorted(ref.out)
            k = keys[(host + sport + dst) % len(keys)]
            nat_port = ref.out[k] + extra  # extra=1: a port that may belong to no one (or another flow)
            p = Ether() / IP(src=k[2], dst=PUB) / TCP(sport=80, dport=nat_port)
            b, out = n.run([p])
            want = ref.back.get((k[2], 80, nat_port))
            if want is None:
                assert b.drop.tolist() == [DR.NO_MAPPING]
            else:
                assert b.port.tolist() == [INTERNAL]
                assert (out[0][IP].dst, out[0][TCP].dport) == want


def test_native_primitives_validate_input() -> None:
    b = from_scapy([out_tcp(), Ether() / IP(src="8.8.8.8", dst=PUB) / UDP(sport=1, dport=2)])
    b.parse()
    src, dst, o, i, other, nv4, onp, inp = _core.split_gateway(b, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2)
    assert o.tolist() == [0] and i.tolist() == [1] and len(other) == 0 and len(nv4) == 0
    assert len(onp) == len(inp) == 0 and b.port.tolist() == [1, 2]
    assert src.tolist() == [0x0A010203, 0x08080808] and dst[1] == 0xC0000201
    rec = np.zeros(4, [("deadline", "<u8"), ("timeout", "<u8")])
    rec["timeout"] = 10
    old = _core.touch_deadlines(rec, 0, 8, np.array([1, 1], np.uint32), np.array([5, 7], np.uint64),
                                np.array([0, 1], np.uint8), 1, 3)
    assert old.tolist() == [0, 15] and rec["deadline"].tolist() == [0, 10, 0, 0] and rec["timeout"][1] == 3
    with pytest.raises(TypeError, match="slots"):
        _core.touch_deadlines(rec, 0, 8, np.array([1], np.int64), np.array([5], np.uint64))
    with pytest.raises(TypeError, match="ts"):
        _core.touch_deadlines(rec, 0, 8, np.array([1], np.uint32), np.array([5], np.float64))
    with pytest.raises(ValueError, match="out of range"):
        _core.touch_deadlines(rec, 0, 8, np.array([4], np.uint32), np.array([5], np.uint64))
    with pytest.raises(ValueError, match="timeout_offset.*does not fit"):
        _core.touch_deadlines(rec, 0, 12, np.array([0], np.uint32), np.array([5], np.uint64))
    with pytest.raises(TypeError, match="C-contiguous"):
        _core.touch_deadlines(rec[::2], 0, 8, np.array([0], np.uint32), np.array([5], np.uint64))
    with pytest.raises(ValueError, match="length"):
        _core.touch_deadlines(rec, 0, 8, np.array([0], np.uint32), np.array([5, 6], np.uint64))


def test_table_full_drops_are_counted() -> None:
    n = Nat(max_flows=4)
    flows = [Ether() / IP(src="10.0.0.1", dst="198.51.100.1") / UDP(sport=100 + i, dport=9) for i in range(6)]
    b, _ = n.run(flows)
    assert b.port.tolist() == [EXTERNAL] * 4 + [0, 0]
    assert b.drop.tolist() == [0] * 4 + [DR.TABLE_FULL] * 2
    assert n.nat.stats()["drop_table_full"] == 2 and n.nat.stats()["mappings"] == 4
    assert n.nat.pools.udp.allocated_count == 4


def test_touch_deadlines_at_validates_input() -> None:
    b = from_scapy([out_tcp(flags="A"), out_tcp(flags="F")])
    b.parse()
    b.ts_ns[:] = [10, 20]
    rec = np.zeros(2, [("deadline", "<u8"), ("timeout", "<u8")])
    rec["timeout"] = 100
    rec["deadline"][1] = 15
    exp, k = _core.touch_deadlines_at(rec, 0, 8, np.array([0, 1], np.uint32), b, np.array([0, 1], np.uint32), 1, 7)
    assert exp.tolist() == [False, True] and k == 1
    assert rec["deadline"].tolist() == [110, 27] and rec["timeout"].tolist() == [100, 7]
    with pytest.raises(TypeError, match="indices"):
        _core.touch_deadlines_at(rec, 0, 8, np.array([0], np.uint32), b, np.array([0], np.int64))
    with pytest.raises(ValueError, match="out of range"):
        _core.touch_deadlines_at(rec, 0, 8, np.array([0], np.uint32), b, np.array([2], np.uint32))
    with pytest.raises(ValueError, match="length"):
        _core.touch_deadlines_at(rec, 0, 8, np.array([0], np.uint32), b, np.array([0, 1], np.uint32))
