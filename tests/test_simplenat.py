"""SimpleNAT: static 1:1 prefix translation both ways on crafted packets (checked against scapy's own
checksums), unmatched policy, per-flow counters, expiry, bad config, and a 2-queue Runner run
whose shared totals are exact."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from _replay import _same, record_and_replay
from vnfkit import _core, traffic
from vnfkit.nfs.simplenat import SimpleNAT
from vnfkit.packets import from_scapy, to_scapy, write_pcap
from vnfkit.state import SharedState
from vnfkit.runtime import Runner, iter_batches
from vnfkit.vnf import Context

POLICY = int(_core.DropReason.POLICY)
E = lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # noqa: E731 (no ARP/ND lookups)
CFG = {"internal_prefix": "10.0.0.0/16", "external_prefix": "198.51.0.0/16"}


class Nat:
    """One SimpleNAT worker driven directly (process() on parsed batches)."""

    def __init__(self, **config):
        self.shared = SharedState()
        self.ctx = Context(0, 1, shared=self.shared)
        self.nat = SimpleNAT()
        self.nat.setup(self.ctx, **(config or CFG))

    def __call__(self, pkts, t0=1.0):
        for i, p in enumerate(pkts):
            p.time = t0 + i * 1e-3
        b = from_scapy(pkts)
        b.parse()
        self.nat.process(b, self.ctx)
        return b, to_scapy(b)


def assert_checksums_like_scapy(out):
    """Every packet's checksums equal what scapy computes from scratch."""
    for p in out:
        if IP not in p:
            continue
        fresh = Ether(bytes(p))
        del fresh[IP].chksum
        l4 = fresh[IP].payload
        if hasattr(l4, "chksum") and not (UDP in fresh and p[UDP].chksum == 0):
            del l4.chksum
        assert bytes(Ether(bytes(fresh))) == bytes(p), p.summary()


def test_outbound_translates_source_keeps_host_bits_and_ports():
    nat = Nat()
    b, out = nat([
        E() / IP(src="10.0.1.2", dst="8.8.8.8") / TCP(sport=40000, dport=443, flags="S"),
        E() / IP(src="10.0.255.254", dst="1.1.1.1") / UDP(sport=5353, dport=53) / b"q",
        E() / IP(src="10.0.0.7", dst="9.9.9.9") / ICMP(type=8, id=4242, seq=1),
    ])
    assert [p[IP].src for p in out] == ["198.51.1.2", "198.51.255.254", "198.51.0.7"]
    assert [p[IP].dst for p in out] == ["8.8.8.8", "1.1.1.1", "9.9.9.9"]
    assert (out[0][TCP].sport, out[0][TCP].dport) == (40000, 443)
    assert (out[1][UDP].sport, out[1][UDP].dport) == (5353, 53)
    assert out[2][ICMP].id == 4242
    assert b.port.tolist() == [2, 2, 2] and b.drop.tolist() == [0, 0, 0]
    assert b.verify_checksums().all()
    assert_checksums_like_scapy(out)
    assert nat.nat.shared_totals() == {"outbound": 3, "inbound": 0, "passthrough": 0, "dropped": 0}
    assert nat.nat.stats()["translated_out"] == 3


def test_inbound_reverse_translation_restores_the_internal_host_and_counts_one_flow():
    nat = Nat()
    _, out = nat([E() / IP(src="10.0.3.4", dst="203.0.113.9") / TCP(sport=1234, dport=80, flags="S")])
    public = out[0][IP].src
    assert public == "198.51.3.4"
    b, res = nat([
        E() / IP(src="203.0.113.9", dst=public) / TCP(sport=80, dport=1234, flags="SA"),
        E() / IP(src="192.0.2.1", dst="198.51.0.1") / UDP(sport=9, dport=7, chksum=0) / b"x",
        E() / IP(src="192.0.2.1", dst="198.51.9.9") / ICMP(type=0, id=7),
    ], t0=2.0)
    assert [p[IP].dst for p in res] == ["10.0.3.4", "10.0.0.1", "10.0.9.9"]
    assert [p[IP].src for p in res] == ["203.0.113.9", "192.0.2.1", "192.0.2.1"]
    assert res[1][UDP].chksum == 0  # "no checksum" stays none
    assert b.port.tolist() == [1, 1, 1]
    assert b.verify_checksums().all()
    assert_checksums_like_scapy(res)
    # both directions of the TCP flow are one record, keyed by the internal side
    rec = nat.nat.flow_records()
    tcp = rec[rec["key"]["proto"] == 6]
    assert len(tcp) == 1
    v = tcp["value"][0]
    assert (v["pkts_out"], v["pkts_in"], v["bytes_out"], v["bytes_in"]) == (1, 1, 40, 40)
    assert bytes(tcp["key"]["src"][0][:4]) == ipaddress.IPv4Address("10.0.3.4").packed
    assert bytes(tcp["key"]["dst"][0][:4]) == ipaddress.IPv4Address("203.0.113.9").packed
    assert (tcp["key"]["sport"][0], tcp["key"]["dport"][0]) == (1234, 80)
    assert nat.nat.shared_totals() == {"outbound": 1, "inbound": 3, "passthrough": 0, "dropped": 0}


def test_hairpin_translates_both_addresses():
    nat = Nat()
    b, out = nat([E() / IP(src="10.0.0.5", dst="198.51.0.6") / TCP(sport=1, dport=2)])
    assert (out[0][IP].src, out[0][IP].dst) == ("198.51.0.5", "10.0.0.6")
    assert b.port.tolist() == [1]  # back inside
    assert_checksums_like_scapy(out)


@pytest.mark.parametrize("policy", ["forward", "drop"])
def test_unmatched_packets_follow_the_policy(policy):
    nat = Nat(**CFG, unmatched=policy)
    pkts = [
        E() / IP(src="192.0.2.1", dst="203.0.113.1") / TCP(sport=1, dport=2),
        E() / IPv6(src="fd00::1", dst="2001:db8::1") / UDP(sport=1, dport=2),
        E() / IP(src="10.1.0.1", dst="8.8.8.8") / UDP(sport=1, dport=2),  # 10.1/16 is not internal
        E() / IP(src="10.0.0.1", dst="8.8.8.8") / UDP(sport=1, dport=2),  # translated
        E() / IP(src="192.0.2.1", dst="10.0.0.9") / UDP(sport=1, dport=2),  # to an inside address
    ]
    before = [bytes(p) for p in pkts]
    b, out = nat(pkts)
    assert [bytes(p) for p in out[:3]] == before[:3]  # untouched
    assert out[3][IP].src == "198.51.0.1"
    if policy == "forward":
        assert b.port.tolist() == [2, 2, 2, 2, 1]
        assert b.drop.tolist() == [0] * 5
        assert nat.nat.shared_totals() == {"outbound": 1, "inbound": 0, "passthrough": 4, "dropped": 0}
    else:
        assert b.port.tolist() == [0, 0, 0, 2, 0]
        assert b.drop.tolist() == [POLICY, POLICY, POLICY, 0, POLICY]
        assert nat.nat.shared_totals() == {"outbound": 1, "inbound": 0, "passthrough": 0, "dropped": 4}
        assert nat.nat.stats()["dropped_unmatched"] == 4


def test_malformed_packets_stay_dropped_by_the_parser():
    nat = Nat()
    good = E() / IP(src="10.0.0.1", dst="8.8.8.8") / TCP()
    bad = Ether(bytes(good)[:20])  # truncated IP header
    b, _ = nat([good, bad])
    assert b.port.tolist() == [2, 0]
    assert b.drop[1] == int(_core.DropReason.TRUNCATED)
    assert nat.nat.shared_totals()["outbound"] == 1


def test_flows_expire_on_packet_time():
    nat = Nat(**CFG, idle_timeout_s=10.0, tcp_close_timeout_s=1.0)
    nat([E() / IP(src="10.0.0.1", dst="8.8.8.8") / UDP(sport=1, dport=2),
         E() / IP(src="10.0.0.2", dst="8.8.8.8") / TCP(sport=1, dport=2, flags="FA")], t0=0.0)
    assert len(nat.nat.flows) == 2
    nat([E() / IP(src="10.0.0.3", dst="8.8.8.8") / UDP()], t0=5.0)  # the FIN'd TCP flow ends
    assert len(nat.nat.flows) == 2 and nat.nat.stats()["flows_expired"] == 1
    nat([E() / IP(src="10.0.0.3", dst="8.8.8.8") / UDP()], t0=14.0)  # idle: the first UDP flow
    assert nat.nat.stats()["flows_expired"] == 2
    assert len(nat.nat.flows) == 1


def test_full_flow_table_still_translates():
    nat = Nat(**CFG, flow_capacity=1)
    b, out = nat([E() / IP(src=f"10.0.0.{i}", dst="8.8.8.8") / UDP() for i in range(1, 4)])
    assert [p[IP].src for p in out] == ["198.51.0.1", "198.51.0.2", "198.51.0.3"]
    assert nat.nat.stats()["untracked"] == 2


def _ref_translate(src, dst, ilen, inet, enet):
    mask = (0xFFFFFFFF << (32 - ilen)) & 0xFFFFFFFF
    host = ~mask & 0xFFFFFFFF
    out_m = (src & mask) == inet
    in_m = (dst & mask) == enet
    return (enet | (src & host)) if out_m else src, (inet | (dst & host)) if in_m else dst


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.sampled_from([6, 17]),
                       st.integers(0, 65535), st.integers(0, 65535)), min_size=1, max_size=40),
    st.integers(8, 30),
    st.booleans(),
)
def test_translation_matches_a_python_reference(flows, plen, near):
    inet = (10 << 24) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
    enet = (100 << 24) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
    cfg = {"internal_prefix": f"{ipaddress.IPv4Address(inet)}/{plen}",
           "external_prefix": f"{ipaddress.IPv4Address(enet)}/{plen}"}
    nat = Nat(**cfg)
    pkts = []
    for src, dst, proto, sp, dp in flows:
        if near:  # bias addresses into the prefixes so both directions get exercised
            src = inet | (src & 0xFF) if src % 3 == 0 else src
            dst = enet | (dst & 0xFF) if dst % 3 == 0 else dst
        l4 = TCP(sport=sp, dport=dp) if proto == 6 else UDP(sport=sp, dport=dp)
        pkts.append(E() / IP(src=str(ipaddress.IPv4Address(src)), dst=str(ipaddress.IPv4Address(dst))) / l4)
    b, out = nat(pkts)
    for (src, dst, proto, sp, dp), p, before in zip(flows, out, pkts):
        s, d = _ref_translate(int(ipaddress.IPv4Address(before[IP].src)), int(ipaddress.IPv4Address(before[IP].dst)),
                              plen, inet, enet)
        assert (p[IP].src, p[IP].dst) == (str(ipaddress.IPv4Address(s)), str(ipaddress.IPv4Address(d)))
        assert (p[IP].payload.sport, p[IP].payload.dport) == (before[IP].payload.sport, before[IP].payload.dport)
    assert b.verify_checksums().all()


@pytest.mark.parametrize("cfg, exc, field", [
    ({"internal_prefix": "10.0.0.0/8", "external_prefix": "100.64.0.0/10"}, ValueError, "external_prefix"),
    ({"internal_prefix": "10.0.0.1/8"}, ValueError, "internal_prefix"),
    ({"internal_prefix": 167772160}, TypeError, "internal_prefix"),
    ({"external_prefix": "not-a-prefix"}, ValueError, "external_prefix"),
    ({"internal_prefix": "10.0.0.0/8", "external_prefix": "10.0.0.0/8"}, ValueError, "external_prefix"),
    ({"unmatched": "reject"}, ValueError, "unmatched"),
    ({"internal_port": 0}, ValueError, "internal_port"),
    ({"external_port": "2"}, TypeError, "external_port"),
    ({"flow_capacity": 0}, ValueError, "flow_capacity"),
    ({"idle_timeout_s": -1}, ValueError, "idle_timeout_s"),
    ({"tcp_close_timeout_s": "5"}, TypeError, "tcp_close_timeout_s"),
    ({"bogus": 1}, TypeError, "bogus"),
])
def test_bad_config_names_the_field(cfg, exc, field):
    with pytest.raises(exc, match=field):
        SimpleNAT().setup(Context(0, 1, shared=SharedState()), **cfg)


def _two_way_trace(flows=300, packets=6000, seed=7):
    """Generated outbound traffic (sources in 10/8) plus, per packet, a reply to the public address."""
    out = traffic.generate(flows, packets, seed=seed)
    keys = out.key.copy()
    rk = keys.copy()
    rk["src"], rk["dst"] = keys["dst"], keys["src"]
    rk["sport"], rk["dport"] = keys["dport"], keys["sport"]
    rk["dst"][:, 0] = 100  # 10.x.y.z -> its public name 100.x.y.z
    n = len(keys)
    allk = np.concatenate([keys, rk])
    ts = np.concatenate([out.ts_ns, out.ts_ns + np.uint64(500)])
    order = np.argsort(ts, kind="stable")
    flags = np.concatenate([out.tcp_flags, out.tcp_flags])
    b = _core.build_packets(np.ascontiguousarray(allk[order]), np.full(2 * n, 64, np.uint16),
                            np.ascontiguousarray(ts[order]), np.ascontiguousarray(flags[order]),
                            np.zeros(2 * n, np.uint32))
    b.parse()
    return b, order < n


def test_runner_two_queues_exact_shared_totals_and_no_internal_address_outside():
    b, is_out = _two_way_trace()
    shared = SharedState()
    outputs = []
    with Runner(SimpleNAT, queues=2, config={}, shared=shared) as r:  # defaults: 10/8 <-> 100/8
        res = r.run([b.select(np.arange(s, min(s + 512, len(b)), dtype=np.uint32)) for s in range(0, len(b), 512)],
                    on_output=lambda q, ob: outputs.append(ob))
        nats = r.vnfs
    n_out, n_in = int(is_out.sum()), int((~is_out).sum())
    assert res.packets == len(b) and res.dropped == 0
    assert all(q.packets > 0 for q in res.queues)  # both workers really raced on the shared totals
    assert nats[0].shared_totals() == {"outbound": n_out, "inbound": n_in, "passthrough": 0, "dropped": 0}
    assert res.vnf_stats["translated_out"] == n_out and res.vnf_stats["translated_in"] == n_in
    assert sum(len(nat.flows) for nat in nats) >= 300
    pids = np.concatenate([ob.packet_id for ob in outputs])
    assert sorted(pids.tolist()) == list(range(len(b)))
    for ob in outputs:
        src0 = ob.key["src"][:, 0]
        dst0 = ob.key["dst"][:, 0]
        ext = ob.port == 2
        assert (src0[ext] == 100).all()  # no internal address on the external side
        assert (dst0[ob.port == 1] == 10).all()
        assert ob.verify_checksums().all()
    # every record's per-direction totals add up to the packets seen
    tot = sum(int(nat.flows.values["pkts_out"][nat.flows.live_slots()].sum()) for nat in nats)
    tin = sum(int(nat.flows.values["pkts_in"][nat.flows.live_slots()].sum()) for nat in nats)
    assert (tot, tin) == (n_out, n_in)


def test_replay_of_racing_workers_rebuilds_the_shared_totals():
    b, _ = _two_way_trace(flows=200, packets=3000, seed=3)
    decided, replayed, master, backup = record_and_replay(SimpleNAT, {}, iter_batches(b, 256))
    assert _same(decided, replayed) and backup == master


def test_unparsed_batch_is_refused():
    nat = Nat()
    b = from_scapy([E() / IP(src="10.0.0.1", dst="8.8.8.8") / UDP()])
    with pytest.raises(ValueError, match="not parsed"):
        nat.nat.process(b, nat.ctx)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_finds_no_bad_checksum_in_the_output(tmp_path):
    b, _ = _two_way_trace(flows=200, packets=2000, seed=21)
    outputs = []
    with Runner(SimpleNAT, queues=2) as r:
        r.run(iter_batches(b, 256), on_output=lambda q, ob: outputs.append(ob))
    path = tmp_path / "out.pcap"
    write_pcap(path, outputs)
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-Y",
           'ip.checksum.status=="Bad" || tcp.checksum.status=="Bad" || udp.checksum.status=="Bad"',
           "-T", "fields", "-e", "frame.number"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == []
    # and the public side really carries translated traffic only
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "ip.src == 10.0.0.0/8 && !(ip.dst == 10.0.0.0/8)",
           "-T", "fields", "-e", "frame.number"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == []
