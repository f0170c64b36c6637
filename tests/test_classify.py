"""Software RSS: Toeplitz hash (Microsoft vectors, bit-by-bit reference), RETA, classifier, NAT ports."""

from __future__ import annotations

import ipaddress
import json
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import _core
from vnfkit.classify import (
    MICROSOFT_RSS_KEY,
    MultiQueueClassifier,
    Reta,
    Toeplitz,
    toeplitz_hash,
    toeplitz_hash_v4,
)

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" / "rss_vectors.json").read_text())


def ref_toeplitz(data: bytes, key: bytes) -> int:
    """Bit-by-bit Toeplitz: XOR the 32-bit key window at bit i for every set input bit i."""
    k = int.from_bytes(key, "big")
    klen = len(key) * 8
    h = 0
    for i in range(len(data) * 8):
        if (data[i // 8] >> (7 - i % 8)) & 1:
            h ^= (k >> (klen - 32 - i)) & 0xFFFFFFFF
    return h


def tuple_bytes(src: bytes, dst: bytes, sport: int, dport: int, ports: bool) -> bytes:
    return src + dst + (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") if ports else b"")


def canonical(src: bytes, dst: bytes, sport: int, dport: int, ports: bool):
    if src > dst or (src == dst and ports and sport > dport):
        return dst, src, dport, sport
    return src, dst, sport, dport


def make_batch(keys: list[tuple[bytes, bytes, int, int, int]]) -> _core.PacketBatch:
    """keys: (src, dst, sport, dport, proto) with 4- or 16-byte packed addresses."""
    b = _core.PacketBatch([b"\0" * 64] * len(keys))
    k = b.key
    for i, (s, d, sp, dp, proto) in enumerate(keys):
        k["src"][i, : len(s)] = np.frombuffer(s, np.uint8)
        k["dst"][i, : len(d)] = np.frombuffer(d, np.uint8)
        k["sport"][i] = sp
        k["dport"][i] = dp
        k["proto"][i] = proto
        k["family"][i] = 4 if len(s) == 4 else 6
    return b


def random_v4_batch(n: int, seed: int) -> _core.PacketBatch:
    rng = np.random.default_rng(seed)
    b = _core.PacketBatch([b"\0" * 64] * n)
    k = b.key
    k["src"][:, :4] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    k["dst"][:, :4] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    k["sport"] = rng.integers(0, 65536, n, dtype=np.uint16)
    k["dport"] = rng.integers(0, 65536, n, dtype=np.uint16)
    k["proto"] = 6
    k["family"] = 4
    return b


# ---------------------------------------------------------------- Microsoft vectors

@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_microsoft_rss_vectors(family):
    key = bytes.fromhex(VECTORS["key_hex"])
    assert key == MICROSOFT_RSS_KEY
    t = Toeplitz()
    rows = VECTORS[family]
    for v in rows:
        s = ipaddress.ip_address(v["src"]).packed
        d = ipaddress.ip_address(v["dst"]).packed
        for ports, want in ((False, int(v["hash_l3"], 16)), (True, int(v["hash_l3l4"], 16))):
            data = tuple_bytes(s, d, v["sport"], v["dport"], ports)
            assert ref_toeplitz(data, key) == want
            assert toeplitz_hash(data) == want
            assert toeplitz_hash(data, key) == want
            assert t.hash(data) == want
    # Through FlowKeys and the classifier (proto TCP -> ports when use_ports).
    keys = [(ipaddress.ip_address(v["src"]).packed, ipaddress.ip_address(v["dst"]).packed,
             v["sport"], v["dport"], 6) for v in rows]
    for use_ports, field in ((True, "hash_l3l4"), (False, "hash_l3")):
        b = make_batch(keys)
        MultiQueueClassifier(4, use_ports=use_ports).classify(b)
        assert b.hash.tolist() == [int(v[field], 16) for v in rows]
        assert t.hash_keys(b.key, ports=use_ports).tolist() == [int(v[field], 16) for v in rows]
    if family == "ipv4":
        src = np.array([int(ipaddress.ip_address(v["src"])) for v in rows], np.uint32)
        dst = np.array([int(ipaddress.ip_address(v["dst"])) for v in rows], np.uint32)
        sp = np.array([v["sport"] for v in rows], np.uint16)
        dp = np.array([v["dport"] for v in rows], np.uint16)
        assert toeplitz_hash_v4(src, dst, sp, dp).tolist() == [int(v["hash_l3l4"], 16) for v in rows]
        assert toeplitz_hash_v4(src, dst, sp, dp, ports=False).tolist() == [int(v["hash_l3"], 16) for v in rows]
        assert _core._toeplitz_hash_v4_bitserial(src, dst, sp, dp).tolist() == [
            int(v["hash_l3l4"], 16) for v in rows]


# ---------------------------------------------------------------- properties vs the reference

keys_st = st.binary(min_size=40, max_size=64)


@settings(max_examples=60, deadline=None)
@given(key=keys_st, v6=st.booleans(), ports=st.booleans(), data=st.data())
def test_hash_matches_bitwise_reference(key, v6, ports, data):
    alen = 16 if v6 else 4
    s = data.draw(st.binary(min_size=alen, max_size=alen))
    d = data.draw(st.binary(min_size=alen, max_size=alen))
    sp = data.draw(st.integers(0, 65535))
    dp = data.draw(st.integers(0, 65535))
    inp = tuple_bytes(s, d, sp, dp, ports)
    want = ref_toeplitz(inp, key)
    t = Toeplitz(key)
    assert t.hash(inp) == want
    assert toeplitz_hash(inp, key) == want
    b = make_batch([(s, d, sp, dp, 17)])
    assert t.hash_keys(b.key, ports=ports)[0] == want
    MultiQueueClassifier(3, key=key, use_ports=ports).classify(b)
    assert b.hash[0] == want
    if not v6:
        arrs = (np.array([int.from_bytes(s, "big")], np.uint32), np.array([int.from_bytes(d, "big")], np.uint32),
                np.array([sp], np.uint16), np.array([dp], np.uint16))
        assert toeplitz_hash_v4(*arrs, key=key, ports=ports)[0] == want


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=4, max_size=80), data=st.data())
def test_generic_hash_any_length(key, data):
    inp = data.draw(st.binary(max_size=len(key) - 4))
    assert toeplitz_hash(inp, key) == ref_toeplitz(inp, key)


@settings(max_examples=60, deadline=None)
@given(key=keys_st, v6=st.booleans(), ports=st.booleans(), same_addr=st.booleans(), data=st.data())
def test_symmetric_mode_is_symmetric(key, v6, ports, same_addr, data):
    alen = 16 if v6 else 4
    s = data.draw(st.binary(min_size=alen, max_size=alen))
    d = s if same_addr else data.draw(st.binary(min_size=alen, max_size=alen))
    sp = data.draw(st.integers(0, 65535))
    dp = data.draw(st.integers(0, 65535))
    t = Toeplitz(key)
    b = make_batch([(s, d, sp, dp, 6), (d, s, dp, sp, 6)])
    h = t.hash_keys(b.key, ports=ports, symmetric=True)
    assert h[0] == h[1]
    assert h[0] == ref_toeplitz(tuple_bytes(*canonical(s, d, sp, dp, ports), ports), key)
    c = MultiQueueClassifier(7, key=key, symmetric=True, use_ports=ports)
    lists = c.classify(b)
    assert b.hash[0] == b.hash[1] == b.flow_id[0] == b.flow_id[1] == h[0]
    assert b.queue[0] == b.queue[1]
    # Non-symmetric classifier: hashes may differ but flow_id is shared.
    b2 = make_batch([(s, d, sp, dp, 6), (d, s, dp, sp, 6)])
    MultiQueueClassifier(7, key=key, use_ports=ports).classify(b2)
    assert b2.flow_id[0] == b2.flow_id[1] == h[0]
    assert sum(len(x) for x in lists) == 2
    if not v6:
        arr = lambda x: np.array([int.from_bytes(x, "big")], np.uint32)  # noqa: E731
        fwd = toeplitz_hash_v4(arr(s), arr(d), np.array([sp], np.uint16), np.array([dp], np.uint16),
                               key=key, ports=ports, symmetric=True)
        rev = toeplitz_hash_v4(arr(d), arr(s), np.array([dp], np.uint16), np.array([sp], np.uint16),
                               key=key, ports=ports, symmetric=True)
        assert fwd[0] == rev[0] == h[0]


@settings(max_examples=40, deadline=None)
@given(key=keys_st, n=st.integers(0, 70), ports=st.booleans(), symmetric=st.booleans(), seed=st.integers(0, 2**32))
def test_simd_and_table_paths_agree_with_reference(key, n, ports, symmetric, seed):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    dst = np.where(rng.random(n) < 0.2, src, rng.integers(0, 1 << 32, n, dtype=np.uint32)).astype(np.uint32)
    sp = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    dp = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    fast = Toeplitz(key).hash_v4(src, dst, sp, dp, ports=ports, symmetric=symmetric)
    table = Toeplitz(key, simd=False).hash_v4(src, dst, sp, dp, ports=ports, symmetric=symmetric)
    assert np.array_equal(fast, table)
    for i in range(min(n, 20)):
        s, d = int(src[i]).to_bytes(4, "big"), int(dst[i]).to_bytes(4, "big")
        tup = (s, d, int(sp[i]), int(dp[i]))
        if symmetric:
            tup = canonical(*tup, ports)
        assert fast[i] == ref_toeplitz(tuple_bytes(*tup, ports), key)


def test_simd_flag():
    assert Toeplitz(simd=False).simd is False
    assert Toeplitz().simd is Toeplitz.simd_supported


# ---------------------------------------------------------------- RETA

def test_reta_round_robin_and_updates():
    r = Reta(128, num_queues=3)
    assert len(r) == r.size == 128 and r.num_queues == 3
    assert r.table.tolist() == [i % 3 for i in range(128)]
    assert r.lookup(0xABCD0000 | 5) == 5 % 3  # low 7 bits select the entry
    r[5] = 0
    assert r[5] == 0 and r.lookup(0xFFFFFF85) == 0
    r.set(6, 2)
    assert r[-122] == 2
    r.update([1] * 128)
    assert set(r.table.tolist()) == {1}
    r.update(np.zeros(128, np.uint16))
    assert set(r.table.tolist()) == {0}
    r.fill_round_robin()
    assert r.table.tolist() == [i % 3 for i in range(128)]
    assert Reta().size == 128 and Reta().num_queues == 1


@pytest.mark.parametrize("size", [0, 3, 100, 131072, -128])
def test_reta_bad_sizes(size):
    with pytest.raises(ValueError, match="reta_size"):
        Reta(size, num_queues=2)
    with pytest.raises(ValueError, match="reta_size"):
        MultiQueueClassifier(2, reta_size=size)


def test_reta_bad_entries_are_rejected_and_leave_table_unchanged():
    r = Reta(8, num_queues=2)
    before = r.table.tolist()
    with pytest.raises(ValueError, match="queue 2 must be < num_queues"):
        r[0] = 2
    with pytest.raises(ValueError, match="reta entry"):
        r.set(0, -1)
    with pytest.raises(ValueError, match="reta index"):
        r.set(8, 0)
    with pytest.raises(IndexError):
        r[8] = 0
    with pytest.raises(IndexError):
        r[8]
    with pytest.raises(ValueError, match="reta entry 7"):
        r.update([0] * 7 + [5])
    with pytest.raises(ValueError, match="expected 8 entries"):
        r.update([0] * 4)
    with pytest.raises(TypeError, match="uint16"):
        r.update(np.zeros(8, np.int64))
    with pytest.raises(TypeError, match="C-contiguous"):
        r.update(np.zeros(16, np.uint16)[::2])
    with pytest.raises(TypeError, match="int"):
        r.update([0.5] * 8)
    assert r.table.tolist() == before


# ---------------------------------------------------------------- classifier

def check_partition(lists, b, c):
    n = len(b)
    allidx = np.concatenate(lists) if lists else np.array([], np.uint32)
    assert sorted(allidx.tolist()) == list(range(n))
    for q, idx in enumerate(lists):
        assert idx.dtype == np.uint32
        assert np.all(np.diff(idx.astype(np.int64)) > 0)  # arrival order
        assert np.all(b.queue[idx] == q)
    table = c.reta.table
    live = (b.drop == 0) & (b.key["family"] != 0)
    assert np.array_equal(b.queue[live], table[b.hash[live] & (c.reta.size - 1)])


def test_classify_partitions_and_agrees_with_reta():
    c = MultiQueueClassifier(4)
    b = random_v4_batch(2000, 1)
    lists = c.classify(b)
    assert len(lists) == 4
    check_partition(lists, b, c)
    t = Toeplitz()
    assert np.array_equal(b.hash, t.hash_keys(b.key))
    assert np.array_equal(b.flow_id, t.hash_keys(b.key, symmetric=True))
    # Round-robin RETA spreads random flows over every queue.
    assert all(len(x) > 300 for x in lists)


def test_runtime_reta_update_changes_split():
    c = MultiQueueClassifier(4, reta_size=64)
    b = random_v4_batch(500, 2)
    c.classify(b)
    c.reta.update([3] * 64)
    lists = c.classify(b)
    assert [len(x) for x in lists] == [0, 0, 0, 500]
    check_partition(lists, b, c)
    c.reta[int(b.hash[0]) & 63] = 1
    lists = c.classify(b)
    assert 0 in lists[1].tolist()
    check_partition(lists, b, c)


def test_dropped_non_ip_fragments_and_non_tcp_udp():
    s, d = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    b = make_batch([(s, d, 1, 2, 6)] * 3 + [(s, d, 1, 2, 1), (s, d, 1, 2, 17), (s, d, 1, 2, 6)])
    b.drop[0] = int(vnfkit.DropReason.TRUNCATED)
    b.key["family"][1] = 0
    b.flags[5] = 1  # fragment
    c = MultiQueueClassifier(3)
    lists = c.classify(b)
    check_partition(lists, b, c)
    assert b.hash[:2].tolist() == [0, 0] and b.queue[:2].tolist() == [0, 0] and b.flow_id[:2].tolist() == [0, 0]
    assert 0 in lists[0].tolist() and 1 in lists[0].tolist()
    with_ports = ref_toeplitz(tuple_bytes(s, d, 1, 2, True), MICROSOFT_RSS_KEY)
    no_ports = ref_toeplitz(s + d, MICROSOFT_RSS_KEY)
    assert b.hash[2:].tolist() == [with_ports, no_ports, with_ports, no_ports]


def test_empty_batch_and_single_queue():
    c = MultiQueueClassifier(1)
    lists = c.classify(_core.PacketBatch([]))
    assert len(lists) == 1 and len(lists[0]) == 0
    b = random_v4_batch(10, 3)
    assert c.classify(b)[0].tolist() == list(range(10))


def test_classifier_properties():
    key = bytes(range(52))
    c = MultiQueueClassifier(16, key=key, symmetric=True, reta_size=512, use_ports=False)
    assert (c.num_queues, c.symmetric, c.use_ports, c.key) == (16, True, False, key)
    assert c.reta.size == 512 and c.reta.num_queues == 16
    assert MultiQueueClassifier(2).key == MICROSOFT_RSS_KEY


# ---------------------------------------------------------------- NAT: predictable RSS

@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("remote,public", [("8.8.8.8", "198.51.100.1"), ("1.1.1.1", "198.51.100.1"),
                                            ("2001:db8::9", "2001:db8::1")])
def test_ports_for_queue_matches_brute_force(symmetric, remote, public):
    c = MultiQueueClassifier(6, symmetric=symmetric)
    lo, hi = 50000, 53000
    ports = np.arange(lo, hi + 1)
    ra, pa = ipaddress.ip_address(remote).packed, ipaddress.ip_address(public).packed
    b = make_batch([(ra, pa, 443, int(p), 6) for p in ports])
    c.classify(b)
    total = 0
    for q in range(6):
        got = c.ports_for_queue(remote, public, 443, q, port_lo=lo, port_hi=hi)
        assert got.dtype == np.uint16
        want = ports[b.queue == q]
        assert got.tolist() == want.tolist()
        total += len(got)
    assert total == len(ports)


def test_ports_for_queue_address_forms_and_errors():
    c = MultiQueueClassifier(4)
    a = c.ports_for_queue("8.8.8.8", "198.51.100.1", 53, 2, proto=17)
    assert np.array_equal(a, c.ports_for_queue(ipaddress.ip_address("8.8.8.8"), bytes([198, 51, 100, 1]), 53, 2,
                                               proto=17))
    assert np.array_equal(a, c.ports_for_queue(0x08080808, "198.51.100.1", 53, 2, proto=17))
    assert np.all((a >= 50000))
    # Not TCP/UDP: the port takes no part in the hash -> all of the range or nothing.
    sizes = [len(c.ports_for_queue("8.8.8.8", "198.51.100.1", 0, q, port_lo=1, port_hi=10, proto=1))
             for q in range(4)]
    assert sorted(sizes) == [0, 0, 0, 10]
    with pytest.raises(ValueError, match="queue"):
        c.ports_for_queue("8.8.8.8", "198.51.100.1", 53, 4)
    with pytest.raises(ValueError, match="families differ"):
        c.ports_for_queue("8.8.8.8", "::1", 53, 0)
    with pytest.raises(ValueError, match="remote_addr"):
        c.ports_for_queue("not-an-ip", "1.2.3.4", 53, 0)
    with pytest.raises(ValueError, match="port_lo"):
        c.ports_for_queue("8.8.8.8", "1.2.3.4", 53, 0, port_lo=60000, port_hi=50000)
    with pytest.raises(ValueError, match="remote_port"):
        c.ports_for_queue("8.8.8.8", "1.2.3.4", 70000, 0)


# ---------------------------------------------------------------- bad input

def test_bad_keys():
    for bad in (b"", b"x" * 39, b"x" * 65):
        with pytest.raises(ValueError, match="key: an RSS key must be 40..64 bytes"):
            Toeplitz(bad)
        with pytest.raises(ValueError, match="key"):
            MultiQueueClassifier(2, key=bad)
    for bad in ("6d5a" * 20, 12345, [1] * 40):
        with pytest.raises(TypeError, match="key"):
            Toeplitz(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            MultiQueueClassifier(2, key=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            toeplitz_hash(b"abcd", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least input length \\+ 4"):
        toeplitz_hash(b"x" * 12, b"k" * 15)
    with pytest.raises(ValueError, match="at most 36 bytes"):
        Toeplitz().hash(b"x" * 37)
    with pytest.raises(TypeError, match="data"):
        toeplitz_hash("abc")  # type: ignore[arg-type]
    assert Toeplitz(bytearray(MICROSOFT_RSS_KEY)).key == MICROSOFT_RSS_KEY


@pytest.mark.parametrize("n", [0, 1025, -1])
def test_bad_queue_counts(n):
    with pytest.raises(ValueError, match="num_queues: must be in 1..1024"):
        MultiQueueClassifier(n)
    with pytest.raises(ValueError, match="num_queues: must be in 1..1024"):
        Reta(128, num_queues=n)
    with pytest.raises(TypeError):
        MultiQueueClassifier("4")  # type: ignore[arg-type]


def test_wrong_dtypes_and_strided_arrays():
    n = 8
    src = np.zeros(n, np.uint32)
    p = np.zeros(n, np.uint16)
    t = Toeplitz()
    with pytest.raises(TypeError, match="src"):
        t.hash_v4(src.astype(np.int64), src, p, p)
    with pytest.raises(TypeError, match="sport"):
        toeplitz_hash_v4(src, src, p.astype(np.uint32), p)
    with pytest.raises(TypeError, match="C-contiguous"):
        t.hash_v4(np.zeros(2 * n, np.uint32)[::2], src, p, p)
    with pytest.raises(TypeError, match="dst"):
        t.hash_v4(src, [0] * n, p, p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        t.hash_v4(src, src[:4], p, p)
    with pytest.raises(TypeError, match="FLOW_KEY_DTYPE"):
        t.hash_keys(np.zeros(4, np.uint8))
    b = random_v4_batch(8, 0)
    with pytest.raises(TypeError, match="FLOW_KEY_DTYPE"):
        t.hash_keys(b.key[::2])
    with pytest.raises(TypeError):
        MultiQueueClassifier(2).classify(b.key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        toeplitz_hash_v4(src, src, p, p, key="abc")  # type: ignore[arg-type]


def test_exports():
    for name in ("MICROSOFT_RSS_KEY", "MultiQueueClassifier", "Reta", "Toeplitz", "toeplitz_hash", "toeplitz_hash_v4"):
        assert getattr(vnfkit, name) is getattr(vnfkit.classify, name)
        assert name in vnfkit.__all__


def test_split_is_classify_then_select_in_one_call() -> None:
    from vnfkit import traffic

    b = traffic.generate(flows=200, packets=1000, seed=12)
    b.parse()
    c = MultiQueueClassifier(3)
    parts = c.split(b)
    idx = c.classify(b)
    assert [q for q, _ in parts] == [q for q in range(3) if len(idx[q])]
    for q, sub in parts:
        ref = b.select(idx[q])
        assert sub.to_list() == ref.to_list()
        assert np.array_equal(sub.packet_id, ref.packet_id) and np.array_equal(sub.key, ref.key)
        assert np.array_equal(sub.queue, np.full(len(sub), q)) and np.array_equal(sub.hash, ref.hash)
    assert sum(len(s) for _, s in parts) == len(b)
    one = MultiQueueClassifier(1)
    whole = one.split(b)
    assert len(whole) == 1 and whole[0][0] == 0 and whole[0][1] is b  # all on one queue: the batch itself
    assert MultiQueueClassifier(2).split(_core.PacketBatch([])) == []
