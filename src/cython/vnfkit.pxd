# cython: language_level=3
# Declarations of the vnfkit engine for per-packet stages written in Cython.
#
#     from vnfkit cimport PacketBatch, FlowKey, DropReason, batch_from_object
#
# Compile the stage as C++20 with vnfkit.cython_support.get_include() on both the Cython include path
# (this file) and the C++ include path (the engine headers); link vnfkit.cython_support.get_library()
# only if you call a non-inline engine function (drop_reason_name, crc32c). See docs/cython.md.
#
# The engine PacketBatch is the very object behind a Python vnfkit PacketBatch: get it with
# batch_from_object(py_batch). The pointer is valid only while the Python object lives. A stage may
# rewrite bytes in place and write the columns; if it changes packet sizes it must keep `offsets`
# consistent (n + 1 entries, offsets[0] == 0, non-decreasing, offsets[n] == data.size()), and
# numpy views of `data` taken before a resize are then invalid.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libcpp cimport bool
from libcpp.vector cimport vector
from libcpp.string_view cimport string_view


cdef extern from "vnfkit/flow/flow_key.hpp" namespace "vnfkit::flow" nogil:
    cdef enum class Family "vnfkit::flow::Family" (uint8_t):
        kNone
        kIPv4
        kIPv6

    cdef cppclass FlowKey:
        # 40 bytes: addresses in network byte order (IPv4 in the first 4 bytes), ports in host order
        uint8_t src[16]
        uint8_t dst[16]
        uint16_t sport
        uint16_t dport
        uint8_t proto
        uint8_t family
        uint16_t pad
        uint32_t src_v4() const
        uint32_t dst_v4() const
        FlowKey reversed() const
        bool operator==(const FlowKey&) const

    FlowKey make_v4_key(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto)


cdef extern from "vnfkit/packet/batch.hpp" namespace "vnfkit::packet" nogil:
    # Why a packet was dropped (the values stored in PacketBatch.drop).
    cdef enum class DropReason "vnfkit::packet::DropReason" (uint8_t):
        kNone
        kTruncated
        kBadEthertype
        kBadIpVersion
        kBadIhl
        kBadIpLength
        kBadL4Header
        kBadExtHeader
        kPolicy
        kNoMapping
        kPoolExhausted
        kTableFull
        kTtlExpired
        kOther
        kCount_ "vnfkit::packet::DropReason::kCount_"

    # Bits of PacketBatch.flags.
    cdef enum PacketFlag "vnfkit::packet::PacketFlag":
        kFlagFragment
        kFlagFirstFragment
        kFlagHasL4
        kFlagVlan
        kFlagIpOptions

    string_view drop_reason_name(DropReason r)   # needs the engine library

    cdef cppclass PacketBatch:
        # Packet i is data[offsets[i] : offsets[i + 1]]; every column has size() entries.
        vector[uint8_t] data
        vector[uint32_t] offsets
        vector[uint64_t] ts_ns
        vector[uint64_t] packet_id
        vector[FlowKey] key
        vector[uint32_t] hash
        vector[uint32_t] flow_id
        vector[uint16_t] queue
        vector[uint16_t] port        # output port; 0 = drop
        vector[uint8_t] drop         # DropReason
        vector[uint8_t] flags        # PacketFlag bits
        vector[uint8_t] tcp_flags
        vector[uint16_t] l3_offset
        vector[uint16_t] l4_offset
        vector[uint16_t] l4_len
        size_t size() const


cdef extern from *:
    """
    #include <span>
    #include <cstdint>
    #include "vnfkit/snapshot/snapshot.hpp"
    static inline std::uint32_t vnfkit_crc32c_bytes(const std::uint8_t* p, std::size_t n, std::uint32_t crc) noexcept {
      return vnfkit::snapshot::crc32c(std::span<const std::uint8_t>(p, n), crc);
    }
    """
    # CRC32C (Castagnoli) of n bytes, continuing from `crc` (0 to start); hardware-accelerated where
    # the CPU has SSE4.2. Wraps vnfkit::snapshot::crc32c; needs the engine library.
    uint32_t crc32c_bytes "vnfkit_crc32c_bytes" (const uint8_t* p, size_t n, uint32_t crc) nogil


cdef inline uint8_t* packet_ptr(PacketBatch* b, size_t i) noexcept nogil:
    """First byte of packet i (no bounds check: i < b.size())."""
    return b.data.data() + b.offsets[i]


cdef inline uint32_t packet_len(PacketBatch* b, size_t i) noexcept nogil:
    """Length of packet i in bytes (no bounds check: i < b.size())."""
    return b.offsets[i + 1] - b.offsets[i]


cdef inline PacketBatch* batch_from_object(object batch) except NULL:
    """The engine PacketBatch behind a Python vnfkit.PacketBatch (valid while `batch` lives).

    Raises TypeError for anything that is not a vnfkit PacketBatch."""
    from vnfkit import _core
    if not isinstance(batch, _core.PacketBatch):
        raise TypeError(f"expected a vnfkit PacketBatch, got {type(batch).__name__}")
    return <PacketBatch*> <uintptr_t> batch._engine_ptr()
