"""A small pure-Python reference of vnfkit's header parser (same rules as cpp/src/packet/parse.cpp).

Returns a dict of the fields vnfkit fills, or {"drop": reason} for a malformed packet. Used by the
property tests; deliberately written as plainly as possible, with struct.
"""

from __future__ import annotations

import struct

NONE, TRUNCATED, BAD_ETHERTYPE, BAD_IP_VERSION, BAD_IHL, BAD_IP_LENGTH, BAD_L4, BAD_EXT = range(8)
F_FRAG, F_FIRST, F_L4, F_VLAN, F_OPT = 1, 2, 4, 8, 16


class Drop(Exception):
    def __init__(self, reason: int) -> None:
        self.reason = reason


def _l4(p: bytes, proto: int, out: dict) -> None:
    n = len(p)
    if proto == 6:
        if n < 20:
            raise Drop(TRUNCATED)
        doff = p[12] >> 4
        if doff < 5 or doff * 4 > n:
            raise Drop(BAD_L4)
        out["sport"], out["dport"] = struct.unpack("!HH", p[:4])
        out["tcp_flags"] = p[13]
        out["flags"] |= F_L4
    elif proto == 17:
        if n < 8:
            raise Drop(TRUNCATED)
        ulen = struct.unpack("!H", p[4:6])[0]
        if ulen < 8 or ulen > n:
            raise Drop(BAD_L4)
        out["sport"], out["dport"] = struct.unpack("!HH", p[:4])
        out["flags"] |= F_L4
    elif proto in (1, 58):
        v6 = proto == 58
        if n < (4 if v6 else 8):
            raise Drop(TRUNCATED)
        t = p[0]
        if t in ((128, 129) if v6 else (8, 0)):
            if n < 8:
                raise Drop(TRUNCATED)
            out["sport"] = out["dport"] = struct.unpack("!H", p[4:6])[0]
        else:
            out["sport"], out["dport"] = 0, (t << 8) | p[1]
        out["flags"] |= F_L4


def _parse(pkt: bytes, out: dict) -> None:
    if len(pkt) < 14:
        raise Drop(TRUNCATED)
    off = 12
    et = struct.unpack("!H", pkt[12:14])[0]
    tags = 0
    while et in (0x8100, 0x88A8, 0x9100):
        tags += 1
        if tags > 4:
            raise Drop(BAD_ETHERTYPE)
        if off + 6 > len(pkt):
            raise Drop(TRUNCATED)
        off += 4
        et = struct.unpack("!H", pkt[off:off + 2])[0]
        out["flags"] |= F_VLAN
    off += 2
    out["l3_offset"] = off
    ip = pkt[off:]
    if et == 0x0800:
        if len(ip) < 20:
            raise Drop(TRUNCATED)
        if ip[0] >> 4 != 4:
            raise Drop(BAD_IP_VERSION)
        ihl = (ip[0] & 15) * 4
        if ihl < 20 or ihl > len(ip):
            raise Drop(BAD_IHL)
        total = struct.unpack("!H", ip[2:4])[0]
        if total < ihl or total > len(ip):
            raise Drop(BAD_IP_LENGTH)
        if ihl > 20:
            out["flags"] |= F_OPT
        out.update(family=4, proto=ip[9], src=ip[12:16] + bytes(12), dst=ip[16:20] + bytes(12),
                   l4_offset=off + ihl, l4_len=total - ihl)
        frag = struct.unpack("!H", ip[6:8])[0]
        if frag & 0x2000 or frag & 0x1FFF:
            out["flags"] |= F_FRAG
            if frag & 0x1FFF:
                return
            out["flags"] |= F_FIRST
        _l4(ip[ihl:total], ip[9], out)
    elif et == 0x86DD:
        if len(ip) < 40:
            raise Drop(TRUNCATED)
        if ip[0] >> 4 != 6:
            raise Drop(BAD_IP_VERSION)
        plen = struct.unpack("!H", ip[4:6])[0]
        if 40 + plen > len(ip):
            raise Drop(BAD_IP_LENGTH)
        out.update(family=6, src=ip[8:24], dst=ip[24:40])
        nh, o, end, count, nonfirst = ip[6], 40, 40 + plen, 0, False
        while nh in (0, 43, 60, 51, 44):
            if o + 8 > end:
                raise Drop(BAD_EXT)
            if nh == 44:
                hlen = 8
                out["flags"] |= F_FRAG
                if struct.unpack("!H", ip[o + 2:o + 4])[0] & 0xFFF8:
                    nonfirst = True
                else:
                    out["flags"] |= F_FIRST
            elif nh == 51:
                hlen = (ip[o + 1] + 2) * 4
            else:
                hlen = (ip[o + 1] + 1) * 8
            if count >= 8 or o + hlen > end:
                raise Drop(BAD_EXT)
            count += 1
            out["flags"] |= F_OPT
            nh = ip[o]
            o += hlen
            if nonfirst:
                break
        out.update(proto=nh, l4_offset=off + o, l4_len=end - o)
        if not nonfirst:
            _l4(ip[o:end], nh, out)
    else:
        raise Drop(BAD_ETHERTYPE)


def ref_parse(pkt: bytes) -> dict:
    out = {"family": 0, "proto": 0, "src": bytes(16), "dst": bytes(16), "sport": 0, "dport": 0, "flags": 0,
           "tcp_flags": 0, "l3_offset": 0, "l4_offset": 0, "l4_len": 0, "drop": NONE}
    try:
        _parse(pkt[:0xFFFF], out)
    except Drop as d:
        return {"drop": d.reason, "flags": out["flags"] & ~F_L4}
    return out


def vnfkit_fields(b, i: int) -> dict:
    k = b.key[i]
    if b.drop[i]:
        return {"drop": int(b.drop[i]), "flags": int(b.flags[i])}
    return {"family": int(k["family"]), "proto": int(k["proto"]), "src": bytes(k["src"]), "dst": bytes(k["dst"]),
            "sport": int(k["sport"]), "dport": int(k["dport"]), "flags": int(b.flags[i]),
            "tcp_flags": int(b.tcp_flags[i]), "l3_offset": int(b.l3_offset[i]), "l4_offset": int(b.l4_offset[i]),
            "l4_len": int(b.l4_len[i]), "drop": 0}
