"""The NAT fast path's own rewrite loop (TCP/UDP rows of ``nat_fast_path`` / ``NatFastPath``) writes
exactly the bytes and key columns of the general ``rewrite_v4`` (``PacketBatch.rewrite_source`` /
``rewrite_destination``), packet by packet: TCP and UDP both ways, a UDP checksum of 0 (none), a UDP
checksum that becomes 0 (written 0xFFFF), FIN/SYN packets, and packets whose parse columns do not
fit their bytes (left alone by both)."""

from __future__ import annotations

import struct

import numpy as np
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from vnfkit import _core
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
from vnfkit.packets import from_scapy
from vnfkit.state import SharedState
from vnfkit.vnf import Context

PUB = 0xC0000201  # 192.0.2.1, MazuNAT's default public address
S = 1_000_000_000


def _u32(col: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(col[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


def _ones(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


class Run:
    """A MazuNAT fed scapy packets; each batch is checked against rewrite_v4 on a copy."""

    def __init__(self) -> None:
        self.ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
        self.nat = MazuNAT()
        self.nat.setup(self.ctx, port_lo=1024, port_hi=65535)
        self.next_id = 0
        self.checked = {"out": 0, "in": 0}

    def batch(self, pkts: list, t: float, spoil: tuple[int, ...] = ()) -> _core.PacketBatch:
        for p in pkts:
            p.time = t
        b = from_scapy(pkts)
        b.packet_id[:] = np.arange(self.next_id, self.next_id + len(b), dtype=np.uint64)
        self.next_id += len(b)
        b.parse()
        for i in spoil:  # parse columns that do not fit the packet: neither rewrite may follow them
            b.l4_len[i] = 60000
        return b

    def process_and_check(self, b: _core.PacketBatch) -> _core.PacketBatch:
        ref = b.select(np.arange(len(b), dtype=np.uint32))
        self.nat.process(b, self.ctx)
        assert np.all(b.drop == 0)
        out = np.flatnonzero(b.port == EXTERNAL).astype(np.uint32)
        inb = np.flatnonzero(b.port == INTERNAL).astype(np.uint32)
        assert len(out) + len(inb) == len(b)
        # the NAT's choices (read from its output keys), applied to the copy by the general rewrite
        ref.rewrite_source(out, _u32(b.key["src"])[out], b.key["sport"][out].copy())
        ref.rewrite_destination(inb, _u32(b.key["dst"])[inb], b.key["dport"][inb].copy())
        for i, (x, y) in enumerate(zip(b.to_list(), ref.to_list())):
            assert x == y, f"packet {i}: bytes differ from rewrite_v4's"
        assert b.key.tobytes() == ref.key.tobytes()
        self.checked["out"] += len(out)
        self.checked["in"] += len(inb)
        return b


def _out(i: int, proto: str, flags: str = "A", payload: bytes = b"hello", chksum: int | None = None) -> Ether:
    ip = IP(src=f"10.0.{i // 200}.{i % 200 + 1}", dst=f"198.51.100.{i % 250 + 1}")
    if proto == "tcp":
        return Ether() / ip / TCP(sport=2000 + i, dport=8080, flags=flags) / payload
    udp = UDP(sport=3000 + i, dport=5353) if chksum is None else UDP(sport=3000 + i, dport=5353, chksum=chksum)
    return Ether() / ip / udp / payload


def _reply(p: Ether, sport: int) -> Ether:
    """A reply to translated packet p (its source port after translation: sport)."""
    ip = p[IP]
    if p.haslayer(TCP):
        return Ether() / IP(src=ip.dst, dst="192.0.2.1") / TCP(sport=ip[TCP].dport, dport=sport, flags="A") / b"ok"
    return Ether() / IP(src=ip.dst, dst="192.0.2.1") / UDP(sport=ip[UDP].dport, dport=sport) / b"ok"


def test_fast_rewrite_matches_rewrite_v4() -> None:
    r = Run()
    first = [_out(i, "tcp", "S") for i in range(40)] + [_out(40 + i, "udp") for i in range(40)]
    first += [_out(80 + i, "udp", chksum=0) for i in range(10)]  # no UDP checksum: stays 0
    b = r.process_and_check(r.batch(first, 0.0))  # new flows: ports given in the fast path
    ports = b.key["sport"].copy()
    assert np.all(b.key["sport"] >= 1024)
    # established flows (the fast path's refresh loop) and their replies, some columns spoiled
    again = [_out(i, "tcp", "F" if i % 7 == 0 else "A") for i in range(40)]
    again += [_out(40 + i, "udp") for i in range(40)] + [_out(80 + i, "udp", chksum=0) for i in range(10)]
    replies = [_reply(p, int(ports[i])) for i, p in enumerate(first)]
    r.process_and_check(r.batch(again + replies, 0.001, spoil=(3, 45, 95, 130)))
    # a UDP packet of an established flow whose translated checksum sums to 0xFFFF (written 0xFFFF)
    k = 41
    pseudo = struct.pack("!IIBBH", PUB, int.from_bytes(bytes([198, 51, 100, k % 250 + 1]), "big"), 0, 17, 8 + 2)
    head = struct.pack("!HHHH", int(ports[k]), 5353, 8 + 2, 0)
    w = 0xFFFF - _ones(pseudo + head)
    p = _out(k, "udp", payload=struct.pack("!H", w))
    b = r.process_and_check(r.batch([p], 0.002))
    assert b.to_list()[0][40:42] == b"\xff\xff"  # the UDP checksum field (14 + 20 + 6)
    assert b.verify_checksums().all()
    assert r.checked["out"] >= 180 and r.checked["in"] >= 90
