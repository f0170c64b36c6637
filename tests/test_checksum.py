"""Checksums: full computation vs a pure-Python RFC 1071 reference, RFC 1624 incremental rewrites,
and tshark's own checksum validation of a rewritten pcap."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import traffic


def ref_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_l4_ok(pkt: bytes, l3: int, l4: int, l4_len: int, family: int, proto: int) -> bool:
    seg = pkt[l4:l4 + l4_len]
    if family == 4:
        src, dst = pkt[l3 + 12:l3 + 16], pkt[l3 + 16:l3 + 20]
    else:
        src, dst = pkt[l3 + 8:l3 + 24], pkt[l3 + 24:l3 + 40]
    if proto == 17 and family == 4 and seg[6:8] == b"\0\0":
        return True
    pseudo = b"" if proto == 1 else src + dst + struct.pack("!IxxxB", len(seg), proto)
    return ref_sum(pseudo + seg) == 0xFFFF


def ref_ipv4_ok(pkt: bytes, l3: int) -> bool:
    ihl = (pkt[l3] & 15) * 4
    return ref_sum(pkt[l3:l3 + ihl]) == 0xFFFF


def all_ok_by_reference(b) -> list[bool]:
    out = []
    for i, pkt in enumerate(b.to_list()):
        k = b.key[i]
        ok = True
        if k["family"] == 4:
            ok = ref_ipv4_ok(pkt, int(b.l3_offset[i]))
        if ok and b.flags[i] & 4 and not b.flags[i] & 1:
            ok = ref_l4_ok(pkt, int(b.l3_offset[i]), int(b.l4_offset[i]), int(b.l4_len[i]), int(k["family"]),
                           int(k["proto"]))
        out.append(ok)
    return out


def sample(n=400, seed=1, ipv6=0.3, udp=0.4):
    b = traffic.generate(flows=max(1, n // 8), packets=n, seed=seed, ipv6_fraction=ipv6, udp_fraction=udp)
    assert b.parse() == 0
    return b


def icmp_batch():
    keys = np.zeros(3, dtype=vnfkit.FLOW_KEY_DTYPE)
    keys["family"] = [4, 4, 6]
    keys["proto"] = [1, 1, 58]
    keys["sport"] = [7, 65535, 9]
    keys["src"][:, 0] = 10
    keys["dst"][:, 0] = 192
    b = vnfkit._core.build_packets(keys, np.array([64, 98, 90], np.uint16), np.zeros(3, np.uint64),
                                   np.zeros(3, np.uint8), np.array([1, 2, 3], np.uint32))
    assert b.parse() == 0
    return b


def test_generated_packets_verify_and_agree_with_reference():
    b = sample()
    ok = b.verify_checksums()
    assert ok.all()
    assert all(all_ok_by_reference(b))
    ib = icmp_batch()
    assert ib.verify_checksums().all() and all(all_ok_by_reference(ib))
    assert ib.key["sport"].tolist() == ib.key["dport"].tolist() == [7, 65535, 9]


def test_corruption_is_detected_and_fix_repairs_it():
    b = sample(200)
    data = b.data
    rng = np.random.default_rng(5)
    victims = rng.choice(len(b), 40, replace=False)
    for i in victims:
        off = int(b.offsets[i]) + int(b.l4_offset[i]) + 1  # inside the ports: covered by the L4 checksum
        data[off] ^= 0x5A
    ok = b.verify_checksums()
    assert not ok[victims].any()
    assert ok.sum() == len(b) - 40
    assert ok.tolist() == all_ok_by_reference(b)
    b.parse()
    b.fix_checksums()
    assert b.verify_checksums().all()
    assert all(all_ok_by_reference(b))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), dst=st.booleans(), zero_udp=st.booleans(),
       addrs=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=60),
       ports=st.lists(st.integers(0, 65535), min_size=60, max_size=60))
def test_incremental_rewrite_equals_full_recompute(seed, dst, zero_udp, addrs, ports):
    b = sample(60, seed=seed, ipv6=0.2, udp=0.5)
    if zero_udp:  # a UDP/IPv4 checksum of 0 means "none" and must stay 0
        for i in range(len(b)):
            if b.key[i]["proto"] == 17 and b.key[i]["family"] == 4:
                o = int(b.offsets[i]) + int(b.l4_offset[i]) + 6
                b.data[o:o + 2] = 0
    before = b.to_list()
    n = len(addrs)
    idx = np.arange(n, dtype=np.uint32)
    a = np.array(addrs, dtype=np.uint32)
    p = np.array(ports[:n], dtype=np.uint16)
    fn = b.rewrite_destination if dst else b.rewrite_source
    v4 = b.key["family"][:n] == 4
    assert fn(idx, a, p) == int(v4.sum())
    assert b.verify_checksums().all()
    after = b.to_list()
    keys_after = b.key.copy()
    # The key column was kept in step with the bytes.
    assert b.parse() == 0
    assert np.array_equal(b.key, keys_after)
    field = "dst" if dst else "src"
    port_field = "dport" if dst else "sport"
    for i in np.nonzero(v4)[0]:
        assert bytes(b.key[i][field][:4]) == int(a[i]).to_bytes(4, "big")
        assert b.key[i][port_field] == p[i]
    for i in np.nonzero(~v4)[0]:
        assert after[i] == before[i]  # IPv6 packets are not rewritten
    # Full recompute gives the same bytes (except UDP "no checksum", which full recompute fills in).
    b.fix_checksums()
    for i, (x, y) in enumerate(zip(after, b.to_list())):
        if zero_udp and b.key[i]["proto"] == 17 and b.key[i]["family"] == 4:
            o = int(b.l4_offset[i]) + 6
            assert x[o:o + 2] == b"\0\0"
            x, y = x[:o] + x[o + 2:], y[:o] + y[o + 2:]
        assert x == y


def test_rewrite_icmp_echo_id_and_udp_zero_result_becomes_ffff():
    ib = icmp_batch()
    assert ib.rewrite_source(np.array([0, 1], np.uint32), np.array([1, 2], np.uint32),
                             np.array([4242, 0], np.uint16)) == 2
    assert ib.verify_checksums().all()
    assert ib.key["sport"][:2].tolist() == ib.key["dport"][:2].tolist() == [4242, 0]
    # Find a UDP rewrite whose new checksum is exactly 0: it must be written as 0xFFFF.
    b = sample(8, seed=3, ipv6=0.0, udp=1.0)
    i = 0
    pkt = b.packet(i)
    l4 = int(b.l4_offset[i])
    c_old = struct.unpack("!H", pkt[l4 + 6:l4 + 8])[0]
    sport_old = int(b.key[i]["sport"])
    # Solve ~(~c + ~sport_old + sport_new) == 0  <=>  ~c + ~sport_old + sport_new == 0xFFFF (1s complement)
    s = ((~c_old) & 0xFFFF) + ((~sport_old) & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    new_port = (0xFFFF - s) & 0xFFFF
    src = int.from_bytes(bytes(b.key[i]["src"][:4]), "big")
    b.rewrite_source(np.array([i], np.uint32), np.array([src], np.uint32), np.array([new_port], np.uint16))
    pkt = b.packet(i)
    assert pkt[l4 + 6:l4 + 8] == b"\xff\xff"
    assert b.verify_checksums()[i]


def test_rewrite_rejects_bad_arguments():
    b = sample(16)
    idx = np.array([0, 1], np.uint32)
    addr = np.array([1, 2], np.uint32)
    port = np.array([3, 4], np.uint16)
    with pytest.raises(ValueError, match="out of range"):
        b.rewrite_source(np.array([0, 99], np.uint32), addr, port)
    with pytest.raises(ValueError, match="addr"):
        b.rewrite_source(idx, np.array([1], np.uint32), port)
    with pytest.raises(TypeError, match="uint32"):
        b.rewrite_source(idx.astype(np.int64), addr, port)
    with pytest.raises(TypeError, match="uint16"):
        b.rewrite_destination(idx, addr, port.astype(np.uint32))
    with pytest.raises(TypeError, match="contiguous"):
        b.rewrite_destination(idx, np.zeros(4, np.uint32)[::2], port)


def _tshark_bad(path) -> list[str]:
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-Y",
           'ip.checksum.status=="Bad" || tcp.checksum.status=="Bad" || udp.checksum.status=="Bad"',
           "-T", "fields", "-e", "frame.number"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_accepts_rewritten_checksums(tmp_path):
    b = sample(2000, seed=11, ipv6=0.2, udp=0.5)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(b), 1000, replace=False)).astype(np.uint32)
    b.rewrite_source(idx, rng.integers(0, 2**32, len(idx), dtype=np.uint32),
                     rng.integers(1024, 65536, len(idx), dtype=np.uint16))
    idx2 = np.sort(rng.choice(len(b), 700, replace=False)).astype(np.uint32)
    b.rewrite_destination(idx2, rng.integers(0, 2**32, len(idx2), dtype=np.uint32),
                          rng.integers(0, 65536, len(idx2), dtype=np.uint16))
    out = tmp_path / "out.pcap"
    b.to_pcap(str(out))
    assert _tshark_bad(out) == []
    # The check can fail: break one IPv4 header, one TCP and one UDP checksum and tshark must see them.
    v4 = np.nonzero(b.key["family"] == 4)[0]
    tcp = [int(i) for i in v4 if b.key[i]["proto"] == 6][:1]
    udp = [int(i) for i in v4 if b.key[i]["proto"] == 17][:1]
    ipi = [int(v4[-1])]
    for i, off in ((ipi[0], int(b.l3_offset[ipi[0]]) + 10), (tcp[0], int(b.l4_offset[tcp[0]]) + 16),
                   (udp[0], int(b.l4_offset[udp[0]]) + 6)):
        b.data[int(b.offsets[i]) + off] ^= 0x01
    bad = tmp_path / "bad.pcap"
    b.to_pcap(str(bad))
    assert sorted(int(x) for x in _tshark_bad(bad)) == sorted(i + 1 for i in (ipi[0], tcp[0], udp[0]))
