# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""A per-packet stage in Cython: decrement the IPv4 TTL, drop packets whose TTL is used up."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from vnfkit cimport PacketBatch, DropReason, batch_from_object, packet_ptr, packet_len


cdef inline void ipv4_checksum(uint8_t* ip, uint32_t ihl) noexcept nogil:
    """Recompute the IPv4 header checksum in full (RFC 1071)."""
    cdef uint32_t s = 0, k
    ip[10] = 0
    ip[11] = 0
    for k in range(0, ihl, 2):
        s += (<uint32_t> ip[k] << 8) | ip[k + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    ip[10] = <uint8_t> (s >> 8)
    ip[11] = <uint8_t> s


def ttl_guard(batch, uint16_t out_port=1):
    """Forward every IPv4 packet of a parsed batch to `out_port` with its TTL decremented; drop
    (port 0, DropReason.TTL_EXPIRED) those arriving with TTL <= 1. Returns how many were dropped."""
    cdef PacketBatch* b = batch_from_object(batch)   # the engine object behind the Python batch
    cdef size_t i, n = b.size(), expired = 0
    cdef uint32_t l3, ihl
    cdef uint8_t* ip
    with nogil:                                       # other worker threads keep running
        for i in range(n):
            if b.drop[i] != 0:                        # already dropped (e.g. by the parser)
                continue
            l3 = b.l3_offset[i]
            if l3 + 20 > packet_len(b, i):
                b.port[i] = 0
                b.drop[i] = <uint8_t> DropReason.kTruncated
                continue
            ip = packet_ptr(b, i) + l3
            ihl = (ip[0] & 0x0F) * 4
            if (ip[0] >> 4) != 4 or ihl < 20 or l3 + ihl > packet_len(b, i):
                b.port[i] = out_port                  # not IPv4 with a sane header: pass
                continue
            if ip[8] <= 1:
                b.port[i] = 0
                b.drop[i] = <uint8_t> DropReason.kTtlExpired
                expired += 1
                continue
            ip[8] -= 1
            ipv4_checksum(ip, ihl)
            b.port[i] = out_port
    return expired
