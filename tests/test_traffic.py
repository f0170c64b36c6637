"""Traffic generator: exact counts, reproducibility, TCP flag sequences, distributions, chunking."""

from __future__ import annotations

import numpy as np
import pytest

import vnfkit
from vnfkit import traffic


def _flows_of(b):
    """Per-flow packet index lists (by 5-tuple), in time order."""
    keys = b.key.tobytes()
    out: dict[bytes, list[int]] = {}
    for i in range(len(b)):
        out.setdefault(keys[i * 40:(i + 1) * 40], []).append(i)
    return out


def test_generate_counts_order_and_parse_back():
    b = traffic.generate(flows=300, packets=20_000, seed=7, ipv6_fraction=0.25, udp_fraction=0.3)
    assert len(b) == 20_000
    ts = b.ts_ns.astype(np.int64)
    assert np.all(np.diff(ts) >= 0)
    assert b.packet_id.tolist() == list(range(len(b)))
    keys_built = b.key.copy()
    assert b.parse() == 0
    assert np.array_equal(b.key, keys_built)  # the parser reads back what the builder wrote
    assert b.verify_checksums().all()
    flows = _flows_of(b)
    assert len(flows) == 300
    fam = b.key["family"]
    lens = np.diff(b.offsets)
    assert np.all(lens[fam == 4] == 64) and np.all(lens[fam == 6] == 84)
    # Flow-level fractions are near the requested ones (300 flows: loose bounds).
    first = np.array([idx[0] for idx in flows.values()])
    assert 0.15 < np.mean(fam[first] == 6) < 0.35
    assert 0.2 < np.mean(b.key["proto"][first] == 17) < 0.4


def test_tcp_flows_start_with_syn_end_with_fin():
    b = traffic.generate(flows=200, packets=5000, seed=3, udp_fraction=0.3)
    for idx in _flows_of(b).values():
        proto = b.key["proto"][idx[0]]
        tf = b.tcp_flags[idx].tolist()
        if proto == 17:
            assert set(tf) == {0}
            continue
        assert tf[0] == 0x02
        if len(idx) > 1:
            assert tf[-1] == 0x11
            assert set(tf[1:-1]) <= {0x10}


def test_same_seed_same_trace_other_seed_other_trace():
    a = traffic.generate(flows=50, packets=2000, seed=1, ipv6_fraction=0.5)
    b = traffic.generate(flows=50, packets=2000, seed=1, ipv6_fraction=0.5)
    c = traffic.generate(flows=50, packets=2000, seed=2, ipv6_fraction=0.5)
    assert a.to_list() == b.to_list() and np.array_equal(a.ts_ns, b.ts_ns)
    assert a.to_list() != c.to_list()


def test_chunks_concatenate_to_generate():
    kw = dict(ipv6_fraction=0.2, udp_fraction=0.4)
    whole = traffic.generate(400, 30_000, seed=5, **kw)
    chunks = list(traffic.iter_trace(400, 30_000, seed=5, chunk=2000, **kw))
    assert len(chunks) > 5
    assert max(len(c) for c in chunks) < 30_000
    assert sum(len(c) for c in chunks) == 30_000
    assert b"".join(c.data.tobytes() for c in chunks) == whole.data.tobytes()
    assert np.array_equal(np.concatenate([c.ts_ns for c in chunks]), whole.ts_ns)
    assert np.array_equal(np.concatenate([c.packet_id for c in chunks]), np.arange(30_000))


def test_heavy_tailed_sizes_and_poisson_arrivals():
    plan = traffic.plan_flows(20_000, 1_000_000, seed=9, rate_pps=1e6)
    sizes = np.sort(plan.packets)[::-1]
    assert sizes.sum() == 1_000_000 and sizes.min() >= 1
    assert sizes[: len(sizes) // 10].sum() > 0.5 * sizes.sum()  # the top 10 % of flows carry most packets
    gaps = np.diff(plan.start_ns).astype(np.float64)
    mean = gaps.mean()
    assert abs(mean - 1e9 / (20_000 / 1.0)) / mean < 0.05  # 20 000 flows over a 1 s span
    assert abs(gaps.std() / mean - 1.0) < 0.05  # exponential: coefficient of variation 1
    d = plan.duration_ns[plan.packets > 1].astype(np.float64)
    assert np.median(d) < d.mean()  # right-skewed (lognormal)
    assert plan.end_ns <= max(1e9, plan.start_ns[-1])  # flows are cut at the end of the span


def test_rate_sets_the_span():
    b = traffic.generate(flows=100, packets=10_000, seed=1, rate_pps=100_000.0)
    span = b.ts_ns[-1] - b.ts_ns[0]
    assert 0.05e9 < span <= 0.12e9  # the span, or the last Poisson arrival if that is later


def test_bad_arguments():
    with pytest.raises(ValueError, match="packets"):
        traffic.generate(flows=10, packets=5)
    with pytest.raises(ValueError, match="flows"):
        traffic.generate(flows=0, packets=5)
    with pytest.raises(ValueError, match="ipv6_fraction"):
        traffic.generate(flows=1, packets=5, ipv6_fraction=1.5)
    with pytest.raises(ValueError, match="rate_pps"):
        traffic.generate(flows=1, packets=5, rate_pps=0)
    with pytest.raises(ValueError, match="frame_size"):
        traffic.generate(flows=1, packets=5, frame_size=20)
    with pytest.raises(ValueError, match="chunk"):
        next(traffic.iter_trace(1, 5, chunk=0))


def test_build_packets_validates():
    keys = np.zeros(2, dtype=vnfkit.FLOW_KEY_DTYPE)
    keys["family"] = 4
    keys["proto"] = [6, 47]
    z16, z64, z8, z32 = (np.zeros(2, t) for t in (np.uint16, np.uint64, np.uint8, np.uint32))
    with pytest.raises(ValueError, match="index 1"):
        vnfkit._core.build_packets(keys, z16, z64, z8, z32)
    keys["proto"] = 17
    b = vnfkit._core.build_packets(keys, z16, z64, z8, z32)  # sizes below the minimum are raised to it
    assert np.diff(b.offsets).tolist() == [42, 42]
    with pytest.raises(TypeError, match="FLOW_KEY_DTYPE"):
        vnfkit._core.build_packets(np.zeros(2, np.uint64), z16, z64, z8, z32)
    with pytest.raises(TypeError, match="uint16"):
        vnfkit._core.build_packets(keys, z32, z64, z8, z32)
    with pytest.raises(ValueError, match="length"):
        vnfkit._core.build_packets(keys, np.zeros(3, np.uint16), z64, z8, z32)


def test_write_trace_streams_to_pcap(tmp_path):
    path = tmp_path / "t.pcap"
    seen = []
    stats = traffic.write_trace(path, 100, 10_000, seed=2, chunk=1000, progress=lambda d, t: seen.append(d))
    assert stats["packets"] == 10_000 and seen[-1] == 10_000 and len(seen) > 3
    b = vnfkit.PacketBatch.from_pcap(str(path))
    whole = traffic.generate(100, 10_000, seed=2)
    assert b.to_list() == whole.to_list()
    assert np.array_equal(b.ts_ns, whole.ts_ns // 1000 * 1000)


def _two_way_nat(chunk: int) -> tuple[traffic.TwoWayTraffic, dict[str, int], list[int]]:
    """MazuNAT (timeouts scaled to the trace: TCP after FIN 50 ms) driven by TwoWayTraffic, closed
    loop; returns the traffic, the NAT's counters and every input's (min time, max time) check."""
    from vnfkit.classify import MultiQueueClassifier
    from vnfkit.nfs.mazunat import MazuNAT
    from vnfkit.state import SharedState
    from vnfkit.vnf import Context

    t = traffic.TwoWayTraffic(6000, 260_000, 7, chunk=chunk, flow_rate=20_000.0, mean_duration_s=0.05,
                              udp_fraction=0.3)
    ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1), logged=False)
    nat = MazuNAT()
    nat.setup(ctx, port_lo=1024, tcp_timeout_s=1.0, tcp_done_timeout_s=0.05, udp_timeout_s=0.2,
              gc_interval_s=0.01)
    backwards = []
    clock = 0
    while (b := t.next_input()) is not None:
        b.parse()
        outs = [b.select(np.arange(s, min(s + 1024, len(b)), dtype=np.uint32)) for s in range(0, len(b), 1024)]
        for x in outs:
            nat.process(x, ctx)
        backwards.append(int(int(b.ts_ns.min()) < clock))
        clock = max(clock, int(b.ts_ns.max()))
        t.answer(outs)
    return t, nat.stats(), backwards


def test_two_way_replies_never_miss_a_live_mapping():
    """The remote hosts answer a window at most one window late; replies are timed when they
    arrive (the NAT's clock never runs backwards), and with a window (44 ms) below the shortest
    timeout (50 ms) every reply finds its mapping: no no-mapping drop at all."""
    t, st, backwards = _two_way_nat(65536)
    assert t.window_ns < 50_000_000 and t.reply_packets > 100_000
    assert st["expired_mappings"] > 0 and st["reverse_translations"] == t.reply_packets
    assert st["drop_no_mapping"] == 0
    assert not any(backwards)  # every input starts at or after the latest time handed out before
    assert t.late_replies > 0 and t.max_reply_lag_ns <= t.window_ns + t.delay_ns


def test_two_way_late_replies_expire_honestly():
    """With windows wider than the 50 ms done timeout, replies to FINs can arrive after their
    mapping expired: those (and only such late ones) are no-mapping drops, never replies in time."""
    t, st, backwards = _two_way_nat(4 * 65536)
    assert t.window_ns > 50_000_000 and not any(backwards)
    assert st["drop_no_mapping"] <= t.late_replies
