"""Monitor: per-flow records and shared per-prefix counters exact against a pure-Python reference
(also across flow expiry and with two racing workers), NetFlow-like export on idle / FIN, the
report, malformed packets, bad config."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from _replay import _same, record_and_replay
from vnfkit import traffic
from vnfkit.nfs.monitor import FLOW_RECORD_DTYPE, Monitor, merged_report, prefix_keys
from vnfkit.packets import from_scapy
from vnfkit.state import SharedState
from vnfkit.tables import EXPIRED_CLOSED, EXPIRED_IDLE
from vnfkit.runtime import Runner, iter_batches
from vnfkit.vnf import Context

E = lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # noqa: E731 (no ARP/ND lookups)


def make(**config):
    shared = SharedState()
    ctx = Context(0, 1, shared=shared)
    mon = Monitor()
    mon.setup(ctx, **config)
    return mon, ctx


def feed(mon, ctx, pkts, times):
    for p, t in zip(pkts, times):
        p.time = t
    b = from_scapy(pkts)
    b.parse()
    mon.process(b, ctx)
    return b


def ftuple(k):
    return (bytes(k["src"]), bytes(k["dst"]), int(k["sport"]), int(k["dport"]), int(k["proto"]), int(k["family"]))


def reference(batch, v4=24, v6=48):
    """Per-flow (packets, bytes, first, last) and per-prefix (packets, bytes) by plain Python."""
    flows = {}
    prefixes = defaultdict(lambda: [0, 0])
    for i in range(len(batch)):
        if batch.drop[i]:
            continue
        raw = batch.packet(i)
        l3 = int(batch.l3_offset[i])
        if raw[l3] >> 4 == 4:
            ip_len = int.from_bytes(raw[l3 + 2:l3 + 4], "big")
            net = ipaddress.ip_network(f"{ipaddress.IPv4Address(raw[l3 + 12:l3 + 16])}/{v4}", strict=False)
        else:
            ip_len = 40 + int.from_bytes(raw[l3 + 4:l3 + 6], "big")
            net = ipaddress.ip_network(f"{ipaddress.IPv6Address(raw[l3 + 8:l3 + 24])}/{v6}", strict=False)
        k = ftuple(batch.key[i])
        ts = int(batch.ts_ns[i])
        f = flows.setdefault(k, [0, 0, ts, ts])
        f[0] += 1
        f[1] += ip_len
        f[3] = ts
        prefixes[str(net)][0] += 1
        prefixes[str(net)][1] += ip_len
    return flows, dict(prefixes)


def records_by_flow(recs):
    out = defaultdict(lambda: [0, 0])
    for r in recs:
        k = ftuple(r["key"])
        out[k][0] += int(r["packets"])
        out[k][1] += int(r["bytes"])
    return dict(out)


def test_counters_exact_against_reference_v4_and_v6():
    b = traffic.generate(400, 8000, seed=3, ipv6_fraction=0.3)
    b.parse()
    mon, ctx = make(idle_timeout_s=None, tcp_close_timeout_s=None)
    parts = list(iter_batches(b, 300))
    for part in parts:
        mon.process(part, ctx)
    ref_flows, ref_pfx = reference(b)
    rep = mon.report(top=None)
    assert len(rep.flows) == len(ref_flows)
    for r in rep.flows:
        pk, by, first, last = ref_flows[ftuple(r["key"])]
        assert (int(r["packets"]), int(r["bytes"]), int(r["first_ts"]), int(r["last_ts"])) == (pk, by, first, last)
        assert r["end"] == 0
    got = {str(r["prefix"]): (int(r["packets"]), int(r["bytes"])) for r in rep.prefixes}
    assert got == {k: tuple(v) for k, v in ref_pfx.items()}
    assert any(":" in k and k.endswith("/48") for k in got) and any(k.endswith("/24") for k in got)
    # most packets first
    assert (np.diff(rep.prefixes["packets"].astype(np.int64)) <= 0).all()
    assert mon.report(top=3).prefixes["prefix"].tolist() == rep.prefixes["prefix"][:3].tolist()
    assert all((part.port == 1).all() for part in parts)
    st = mon.stats()
    assert st["packets"] == len(b) and st["flows_new"] == len(ref_flows) and st["untracked"] == 0


def test_flow_records_stay_exact_across_idle_expiry():
    b = traffic.generate(300, 6000, seed=5)
    b.parse()
    span = int(b.ts_ns.max() - b.ts_ns.min())
    mon, ctx = make(idle_timeout_s=span / 40 / 1e9, tcp_close_timeout_s=span / 200 / 1e9)
    for part in iter_batches(b, 256):
        mon.process(part, ctx)
    ex = mon.exported()
    assert mon.stats()["flows_exported"] == len(ex) > 0
    assert set(ex["end"].tolist()) == {EXPIRED_IDLE, EXPIRED_CLOSED}
    assert (ex["last_ts"] >= ex["first_ts"]).all()
    ref_flows, _ = reference(b)
    got = records_by_flow(np.concatenate([ex, mon.active()]))
    assert got == {k: [v[0], v[1]] for k, v in ref_flows.items()}
    drained = mon.drain_exports()
    assert len(drained) == len(ex) and len(mon.exported()) == 0


def test_export_on_idle_and_fin_with_exact_records():
    mon, ctx = make(idle_timeout_s=10.0, tcp_close_timeout_s=1.0)
    a = E() / IP(src="10.0.0.1", dst="192.0.2.1") / UDP(sport=1000, dport=53) / b"abcd"
    fin = E() / IP(src="10.0.0.2", dst="192.0.2.1") / TCP(sport=2000, dport=80, flags="FA")
    feed(mon, ctx, [a, a.copy(), fin], [0.0, 2.0, 3.0])
    assert len(mon.exported()) == 0
    feed(mon, ctx, [E() / IP(src="10.0.1.1", dst="192.0.2.1") / UDP()], [4.5])  # FIN + 1 s passed
    ex = mon.exported()
    assert len(ex) == 1 and ex["end"][0] == EXPIRED_CLOSED and ex["packets"][0] == 1 and ex["bytes"][0] == 40
    feed(mon, ctx, [E() / IP(src="10.0.1.1", dst="192.0.2.1") / UDP()], [12.0])  # a idle since 2.0
    ex = mon.exported()
    assert len(ex) == 2
    r = ex[1]
    assert r["end"] == EXPIRED_IDLE
    assert (int(r["packets"]), int(r["bytes"]), int(r["first_ts"]), int(r["last_ts"])) == (2, 2 * 32, 0, 2_000_000_000)
    assert r.dtype == FLOW_RECORD_DTYPE


def test_export_limit_discards_oldest_and_counts_them():
    mon, ctx = make(idle_timeout_s=1.0, export_limit=3)
    for t in range(6):  # each batch's flow expires at the next one
        feed(mon, ctx, [E() / IP(src=f"10.0.0.{t + 1}", dst="192.0.2.1") / UDP()], [t * 2.0])
    ex = mon.exported()
    assert len(ex) == 3 and mon.stats()["export_discarded"] == 2
    assert [bytes(k[:4])[3] for k in ex["key"]["src"]] == [3, 4, 5]


def test_malformed_packets_are_not_counted_and_stay_dropped():
    mon, ctx = make()
    good = E() / IP(src="10.0.0.1", dst="192.0.2.1") / UDP()
    b = feed(mon, ctx, [good, Ether(bytes(good)[:16]), good.copy()], [0.0, 0.0, 0.0])
    assert b.port.tolist() == [1, 0, 1] and b.drop[1] != 0
    rep = mon.report()
    assert rep.prefixes["prefix"].tolist() == ["10.0.0.0/24"] and rep.prefixes["packets"].tolist() == [2]


def test_prefix_keys_layout_and_lengths():
    b = from_scapy([E() / IP(src="10.1.2.3", dst="1.1.1.1") / UDP(),
                    E() / IPv6(src="2001:db8:abcd:1234::1", dst="::1") / UDP()])
    b.parse()
    k = prefix_keys(b.key, 16, 32)
    assert int(k[0]) == (4 << 56) | (16 << 48) | 0x0A010000
    assert int(k[1]) == (6 << 56) | (32 << 48) | (0x20010DB8 << 16)
    mon, ctx = make(ipv4_prefix_len=16, ipv6_prefix_len=32)
    mon.process(b, ctx)
    assert sorted(mon.report().prefixes["prefix"].tolist()) == ["10.1.0.0/16", "2001:db8::/32"]


def test_full_prefix_table_is_counted_not_fatal():
    mon, ctx = make(prefix_slots=2)
    feed(mon, ctx, [E() / IP(src=f"10.0.{i}.1", dst="192.0.2.1") / UDP() for i in range(5)], [0.0] * 5)
    assert mon.stats()["prefix_full"] > 0 and len(mon.report().prefixes) == 2


@pytest.mark.parametrize("cfg, exc, field", [
    ({"flow_capacity": -1}, ValueError, "flow_capacity"),
    ({"idle_timeout_s": "15"}, TypeError, "idle_timeout_s"),
    ({"tcp_close_timeout_s": 0}, ValueError, "tcp_close_timeout_s"),
    ({"ipv4_prefix_len": 33}, ValueError, "ipv4_prefix_len"),
    ({"ipv6_prefix_len": 64}, ValueError, "ipv6_prefix_len"),
    ({"prefix_slots": 1.5}, TypeError, "prefix_slots"),
    ({"export_limit": -5}, ValueError, "export_limit"),
    ({"out_port": 70000}, ValueError, "out_port"),
    ({"top": 3}, TypeError, "top"),
])
def test_bad_config_names_the_field(cfg, exc, field):
    with pytest.raises(exc, match=field):
        Monitor().setup(Context(0, 1, shared=SharedState()), **cfg)


def test_runner_two_queues_exact_shared_prefix_totals():
    b = traffic.generate(500, 12000, seed=11, ipv6_fraction=0.2)
    b.parse()
    with Runner(Monitor, queues=2, config={"idle_timeout_s": 0.002}) as r:
        res = r.run(iter_batches(b, 400))
        mons = r.vnfs
    assert all(q.packets > 0 for q in res.queues)
    assert res.forwarded == len(b) and res.vnf_stats["packets"] == len(b)
    ref_flows, ref_pfx = reference(b)
    rep = merged_report(mons, top=None)
    got = {str(x["prefix"]): (int(x["packets"]), int(x["bytes"])) for x in rep.prefixes}
    assert got == {k: tuple(v) for k, v in ref_pfx.items()}
    assert records_by_flow(rep.flows) == {k: [v[0], v[1]] for k, v in ref_flows.items()}
    with pytest.raises(ValueError, match="monitors"):
        merged_report([])


def test_replay_of_racing_workers_rebuilds_the_shared_prefix_counters():
    b = traffic.generate(300, 6000, seed=13, ipv6_fraction=0.2)
    b.parse()
    decided, replayed, master, backup = record_and_replay(Monitor, {"idle_timeout_s": 0.001}, iter_batches(b, 256))
    assert _same(decided, replayed) and backup == master


def test_unparsed_batch_is_refused():
    mon, ctx = make()
    with pytest.raises(ValueError, match="not parsed"):
        mon.process(from_scapy([E() / IP() / UDP()]), ctx)
