"""Header parsing: agrees with scapy field by field, and with a pure-Python reference on fuzzed bytes."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Padding, Raw

import vnfkit
from vnfkit import packets as vp

from _refparse import ref_parse, vnfkit_fields

def E():  # explicit MACs: scapy would otherwise try neighbour resolution (slow)
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


KINDS = ["tcp4", "udp4", "icmp4_echo", "icmp4_other", "tcp4_opts", "frag4_first", "frag4_next",
         "tcp6", "udp6", "icmp6_echo", "icmp6_other", "ext6", "frag6_first", "frag6_next"]


def _rand_v4(r: random.Random) -> str:
    return ".".join(str(r.randrange(256)) for _ in range(4))


def _rand_v6(r: random.Random) -> str:
    return ":".join(f"{r.randrange(65536):x}" for _ in range(8))


def make_packet(r: random.Random, kind: str):
    payload = Raw(bytes(r.randrange(256) for _ in range(r.randrange(0, 40))))
    sport, dport = r.randrange(65536), r.randrange(65536)
    tcp = TCP(sport=sport, dport=dport, flags=r.randrange(256), options=[("NOP", None)] * r.randrange(0, 3))
    udp = UDP(sport=sport, dport=dport)
    if kind.endswith("4") or "4_" in kind or kind.startswith("frag4"):
        ip = IP(src=_rand_v4(r), dst=_rand_v4(r), ttl=r.randrange(1, 256), id=r.randrange(65536))
        if kind == "tcp4":
            l3 = ip / tcp / payload
        elif kind == "udp4":
            l3 = ip / udp / payload
        elif kind == "icmp4_echo":
            l3 = ip / ICMP(type=r.choice([0, 8]), id=r.randrange(65536), seq=r.randrange(65536)) / payload
        elif kind == "icmp4_other":
            l3 = ip / ICMP(type=3, code=r.randrange(16)) / IP(src="1.1.1.1", dst="2.2.2.2") / UDP()
        elif kind == "tcp4_opts":
            ip.options = [IPOption_NOP()] * r.randrange(1, 4) + [IPOption_RR(routers=["1.2.3.4"])]
            l3 = ip / tcp / payload
        elif kind == "frag4_first":
            ip.flags = "MF"
            l3 = ip / (tcp if r.random() < 0.5 else udp) / payload
        else:  # frag4_next
            ip.frag = r.randrange(1, 8000)
            ip.flags = r.choice([0, 1])
            ip.proto = r.choice([6, 17])
            l3 = ip / Raw(bytes(r.randrange(1, 30)))
    else:
        ip6 = IPv6(src=_rand_v6(r), dst=_rand_v6(r), hlim=r.randrange(256))
        if kind == "tcp6":
            l3 = ip6 / tcp / payload
        elif kind == "udp6":
            l3 = ip6 / udp / payload
        elif kind == "icmp6_echo":
            cls = r.choice([ICMPv6EchoRequest, ICMPv6EchoReply])
            l3 = ip6 / cls(id=r.randrange(65536), seq=r.randrange(65536)) / payload
        elif kind == "icmp6_other":
            l3 = ip6 / ICMPv6DestUnreach(code=r.randrange(7)) / IPv6() / UDP()
        elif kind == "ext6":
            exts = [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["::1"] * r.randrange(0, 3)),
                    IPv6ExtHdrDestOpt()]
            chain = ip6
            for e in r.sample(exts, r.randrange(1, 4)):
                chain = chain / e
            l3 = chain / r.choice([tcp, udp]) / payload
        elif kind == "frag6_first":
            l3 = ip6 / IPv6ExtHdrFragment(offset=0, m=1, id=r.randrange(2**32)) / r.choice([tcp, udp]) / payload
        else:  # frag6_next
            l3 = ip6 / IPv6ExtHdrFragment(offset=r.randrange(1, 8000), m=r.choice([0, 1]),
                                          nh=r.choice([6, 17])) / Raw(bytes(r.randrange(1, 30)))
    vlan = r.random()
    if vlan < 0.2:
        frame = E() / Dot1Q(vlan=r.randrange(4096)) / l3
    elif vlan < 0.3:
        frame = E() / Dot1AD(vlan=r.randrange(4096)) / Dot1Q(vlan=r.randrange(4096)) / l3
    else:
        frame = E() / l3
    raw = bytes(frame)
    if len(raw) < 60 and r.random() < 0.5:
        raw += bytes(60 - len(raw))  # Ethernet padding
    return raw


def scapy_fields(raw: bytes) -> dict:
    """The fields vnfkit fills, read from scapy's own dissection."""
    p = Ether(raw)
    out = {"sport": 0, "dport": 0, "tcp_flags": 0, "flags": 0, "drop": 0}
    if Dot1Q in p or Dot1AD in p:
        out["flags"] |= 8
    if IP in p:
        ip = p[IP]
        out["l3_offset"] = len(raw) - len(bytes(ip))
        ihl = ip.ihl * 4
        out.update(family=4, proto=ip.proto, src=bytes(map(int, ip.src.split("."))) + bytes(12),
                   dst=bytes(map(int, ip.dst.split("."))) + bytes(12), l4_offset=out["l3_offset"] + ihl,
                   l4_len=ip.len - ihl)
        if ihl > 20:
            out["flags"] |= 16
        frag, first = bool(ip.flags.MF or ip.frag), ip.frag == 0
        upper = ip.payload
    else:
        ip6 = p[IPv6]
        out["l3_offset"] = len(raw) - len(bytes(ip6))
        import socket

        out.update(family=6, src=socket.inet_pton(socket.AF_INET6, ip6.src),
                   dst=socket.inet_pton(socket.AF_INET6, ip6.dst))
        layer, nh, frag, first = ip6.payload, ip6.nh, False, True
        while isinstance(layer, (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)):
            out["flags"] |= 16
            if isinstance(layer, IPv6ExtHdrFragment):
                frag, first = True, layer.offset == 0
            nh = layer.nh
            layer = layer.payload
        upper = layer
        out["proto"] = nh
        out["l4_offset"] = len(raw) - len(bytes(upper))
        out["l4_len"] = 40 + ip6.plen - (out["l4_offset"] - out["l3_offset"])
    if frag:
        out["flags"] |= 1 | (2 if first else 0)
    if frag and not first:
        return out
    if isinstance(upper, TCP):
        out.update(sport=upper.sport, dport=upper.dport, tcp_flags=int(upper.flags))
        out["flags"] |= 4
    elif isinstance(upper, UDP):
        out.update(sport=upper.sport, dport=upper.dport)
        out["flags"] |= 4
    elif isinstance(upper, ICMP):
        if upper.type in (0, 8):
            out["sport"] = out["dport"] = upper.id
        else:
            out["dport"] = (upper.type << 8) | upper.code
        out["flags"] |= 4
    elif isinstance(upper, (ICMPv6EchoRequest, ICMPv6EchoReply)):
        out["sport"] = out["dport"] = upper.id
        out["flags"] |= 4
    elif isinstance(upper, ICMPv6DestUnreach):
        out["dport"] = (upper.type << 8) | upper.code
        out["flags"] |= 4
    return out


@pytest.fixture(scope="module")
def scapy_sample():
    r = random.Random(2024)
    raws, kinds = [], []
    for i in range(2800):
        kind = KINDS[i % len(KINDS)]
        raws.append(make_packet(r, kind))
        kinds.append(kind)
    return raws, kinds


def test_parser_agrees_with_scapy_on_every_kind(scapy_sample):
    raws, kinds = scapy_sample
    b = vnfkit.PacketBatch(raws)
    assert b.parse() == 0
    assert b.drop_counts() == {}
    seen = set()
    for i, raw in enumerate(raws):
        want = scapy_fields(raw)
        got = vnfkit_fields(b, i)
        assert got == want, (kinds[i], raw.hex())
        seen.add(kinds[i])
    assert seen == set(KINDS)
    # Spot-check the flag bits per kind.
    flags = b.flags
    k = np.array(kinds)
    assert np.all(flags[k == "frag4_next"] & 1) and not np.any(flags[k == "frag4_next"] & 6)
    assert np.all(flags[k == "frag6_first"] & 7 == 7)
    assert np.all(flags[k == "tcp4_opts"] & 16)
    assert np.all(flags[k == "ext6"] & 16)


def test_parser_agrees_with_reference_on_scapy_packets(scapy_sample):
    raws, _ = scapy_sample
    b = vnfkit.PacketBatch(raws)
    b.parse()
    for i, raw in enumerate(raws):
        assert vnfkit_fields(b, i) == ref_parse(raw)


def test_checksums_of_scapy_packets_verify(scapy_sample):
    raws, kinds = scapy_sample
    b = vnfkit.PacketBatch(raws)
    b.parse()
    ok = b.verify_checksums()
    assert ok.dtype == np.bool_ and ok.all()


def test_non_ip_and_truncated_are_dropped_with_reason():
    arp = bytes(E() / ARP())
    good = bytes(E() / IP() / TCP())
    b = vnfkit.PacketBatch([arp, good[:20], good, good[:40], b""])
    b.port[:] = 9
    assert b.parse() == 4
    # A frame cut inside the IP datagram is "bad-ip-length" (the IP header says more than is there).
    assert b.drop.tolist() == [int(vnfkit.DropReason.BAD_ETHERTYPE), int(vnfkit.DropReason.TRUNCATED), 0,
                               int(vnfkit.DropReason.BAD_IP_LENGTH), int(vnfkit.DropReason.TRUNCATED)]
    assert b.port.tolist() == [0, 0, 9, 0, 0]
    assert b.drop_counts() == {"bad-ethertype": 1, "truncated": 2, "bad-ip-length": 1}


def test_bad_headers_get_specific_reasons():
    base = bytearray(bytes(E() / IP() / TCP()))
    cases = {14: (0x44, "bad-ihl"), 16: (0xFF, "bad-ip-length"), 46: (0x30, "bad-l4-header")}
    pkts, want = [], []
    for off, (val, name) in cases.items():
        p = bytearray(base)
        p[off] = val
        pkts.append(bytes(p))
        want.append(name)
    v6 = bytearray(bytes(E() / IPv6() / IPv6ExtHdrHopByHop() / UDP()))
    v6[14 + 40 + 1] = 200  # ext header length runs past the payload
    pkts.append(bytes(v6))
    want.append("bad-ext-header")
    chain = E() / IPv6()
    for _ in range(9):
        chain = chain / IPv6ExtHdrDestOpt()
    pkts.append(bytes(chain / UDP()))  # too long a chain
    want.append("bad-ext-header")
    b = vnfkit.PacketBatch(pkts)
    assert b.parse() == len(pkts)
    assert [vnfkit._core.drop_reason_name(int(d)) for d in b.drop] == want


packet_strategy = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda seed, kind, cut, muts: (seed, kind, cut, muts), st.integers(0, 2**32 - 1),
              st.sampled_from(KINDS), st.integers(0, 200), st.lists(st.tuples(st.integers(0, 199),
                                                                              st.integers(0, 255)), max_size=3)),
)


def _materialise(x) -> bytes:
    if isinstance(x, bytes):
        return x
    seed, kind, cut, muts = x
    raw = bytearray(make_packet(random.Random(seed), kind))
    for pos, val in muts:
        if pos < len(raw):
            raw[pos] = val
    return bytes(raw[:cut])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet_strategy, min_size=1, max_size=20))
def test_fuzz_parse_matches_reference_and_never_crashes(items):
    raws = [_materialise(x) for x in items]
    b = vnfkit.PacketBatch(raws)
    bad = b.parse()
    assert bad == int(np.count_nonzero(b.drop))
    for i, raw in enumerate(raws):
        assert vnfkit_fields(b, i) == ref_parse(raw), raw.hex()
        if b.drop[i]:
            assert b.port[i] == 0 and bytes(b.key[i].tobytes()) == bytes(40)
        else:
            assert b.l4_offset[i] + b.l4_len[i] <= len(raw)
    b.verify_checksums()  # must not crash on anything the parser accepted


def test_from_arrays_validates():
    data = np.frombuffer(b"abcdef", dtype=np.uint8).copy()
    b = vnfkit.PacketBatch.from_arrays(data, np.array([0, 2, 2, 6], dtype=np.uint32),
                                       np.array([1, 2, 3], dtype=np.uint64))
    assert b.to_list() == [b"ab", b"", b"cdef"]
    assert b.ts_ns.tolist() == [1, 2, 3]
    assert b.packet_id.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"offsets\[0\]"):
        vnfkit.PacketBatch.from_arrays(data, np.array([1, 6], dtype=np.uint32))
    with pytest.raises(ValueError, match="non-decreasing"):
        vnfkit.PacketBatch.from_arrays(data, np.array([0, 4, 3, 6], dtype=np.uint32))
    with pytest.raises(ValueError, match="len\\(data\\)"):
        vnfkit.PacketBatch.from_arrays(data, np.array([0, 5], dtype=np.uint32))
    with pytest.raises(ValueError, match="ts_ns"):
        vnfkit.PacketBatch.from_arrays(data, np.array([0, 6], dtype=np.uint32), np.array([1, 2], dtype=np.uint64))
    with pytest.raises(TypeError, match="uint32"):
        vnfkit.PacketBatch.from_arrays(data, np.array([0, 6], dtype=np.int64))
    with pytest.raises(TypeError, match="uint8"):
        vnfkit.PacketBatch.from_arrays(data.astype(np.int8), np.array([0, 6], dtype=np.uint32))
    with pytest.raises(TypeError, match="contiguous"):
        vnfkit.PacketBatch.from_arrays(np.zeros(12, np.uint8)[::2], np.array([0, 6], dtype=np.uint32))
    with pytest.raises(TypeError):
        vnfkit.PacketBatch.from_arrays(list(b"abc"), np.array([0, 3], dtype=np.uint32))  # type: ignore[arg-type]


def test_select_copies_packets_and_columns(scapy_sample):
    raws, _ = scapy_sample
    b = vnfkit.PacketBatch(raws[:50])
    b.parse()
    b.flow_id[:] = np.arange(50, dtype=np.uint32) * 3
    b.queue[:] = 7
    idx = np.array([49, 0, 3, 3], dtype=np.uint32)
    s = b.select(idx)
    assert s.to_list() == [raws[i] for i in idx]
    for col in ("flow_id", "queue", "key", "flags", "l4_offset", "packet_id", "ts_ns", "drop", "tcp_flags"):
        assert np.array_equal(getattr(s, col), getattr(b, col)[idx]), col
    s.port[:] = 1  # a copy: the original is untouched
    assert b.port[49] == 0
    assert len(b.select(np.array([], dtype=np.uint32))) == 0
    with pytest.raises(ValueError, match="out of range"):
        b.select(np.array([50], dtype=np.uint32))
    with pytest.raises(TypeError):
        b.select(np.array([1], dtype=np.int64))
    with pytest.raises(TypeError, match="contiguous"):
        b.select(np.arange(10, dtype=np.uint32)[::2])


def test_scapy_round_trip():
    pkts = [E() / IP(dst="9.9.9.9") / UDP(dport=53), E() / IPv6() / TCP()]
    pkts[0].time = 1.5
    b = vp.from_scapy(pkts)
    assert b.to_list() == [bytes(p) for p in pkts]
    assert b.ts_ns[0] == 1_500_000_000
    back = vp.to_scapy(b)
    assert [bytes(p) for p in back] == [bytes(p) for p in pkts]
    assert float(back[0].time) == 1.5
    assert back[0][IP].dst == "9.9.9.9"


def test_padding_after_ip_payload_is_not_l4():
    raw = bytes(E() / IP() / UDP() / Padding(b"\x00" * 10))
    b = vnfkit.PacketBatch([raw])
    assert b.parse() == 0
    assert b.l4_len[0] == 8
