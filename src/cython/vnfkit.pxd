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
# consistent (n + 1 entries, offsets[0] == 0, non-decreasing, offsets[n] == data.size()); numpy views
# of `data` taken before a resize keep the old bytes alive (they see the old contents, never freed memory).

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

    # The storage of one column (packet/buffer.hpp): the vector interface used by stages. Swapping
    # in a new vector leaves numpy views taken earlier valid (they keep the old memory alive).
    cdef cppclass Buffer "vnfkit::packet::Buffer"[T]:
        T* data()
        size_t size() const
        bint empty() const
        T& operator[](size_t)
        void resize(size_t) except +
        void reserve(size_t) except +
        void push_back(const T&) except +
        void clear()
        void swap(vector[T]&) except +

    cdef cppclass PacketBatch:
        # Packet i is data[offsets[i] : offsets[i + 1]]; every column has size() entries.
        Buffer[uint8_t] data
        Buffer[uint32_t] offsets
        Buffer[uint64_t] ts_ns
        Buffer[uint64_t] packet_id
        Buffer[FlowKey] key
        Buffer[uint32_t] hash
        Buffer[uint32_t] flow_id
        Buffer[uint16_t] queue
        Buffer[uint16_t] port        # output port; 0 = drop
        Buffer[uint8_t] drop         # DropReason
        Buffer[uint8_t] flags        # PacketFlag bits
        Buffer[uint8_t] tcp_flags
        Buffer[uint16_t] l3_offset
        Buffer[uint16_t] l4_offset
        Buffer[uint16_t] l4_len
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


# Internet checksums (RFC 1071 / RFC 1624) of the packet helper (vnfkit/packet/checksum.hpp; the
# non-constexpr ones need the engine library). Included only where the header exists, so this file
# also works with engines built before the packet parser; using a name without it fails to compile.
cdef extern from *:
    """
    #if __has_include("vnfkit/packet/checksum.hpp")
    #include <span>
    #include "vnfkit/packet/checksum.hpp"
    #define VNFKIT_HAS_CHECKSUM 1
    static inline std::uint16_t vnfkit_ipv4_header_checksum(const std::uint8_t* hdr, std::size_t n) noexcept {
      return vnfkit::packet::ipv4_header_checksum(std::span<const std::uint8_t>(hdr, n));
    }
    static inline std::uint16_t vnfkit_l4_checksum(const std::uint8_t* src, const std::uint8_t* dst, bool v6,
                                                   std::uint8_t proto, const std::uint8_t* l4, std::size_t n) noexcept {
      return vnfkit::packet::l4_checksum(src, dst, v6, proto, std::span<const std::uint8_t>(l4, n));
    }
    #else
    #define VNFKIT_HAS_CHECKSUM 0
    #endif
    """
    const int VNFKIT_HAS_CHECKSUM    # 1 if the declarations below are usable
    # unfolded ones'-complement partial sum of n bytes, added to `sum`
    uint32_t sum_bytes "vnfkit::packet::sum_bytes" (const uint8_t* p, size_t n, uint32_t sum) nogil
    # end-around carry to 16 bits (the checksum to write is ~fold(sum))
    uint16_t fold "vnfkit::packet::fold" (uint32_t sum) nogil
    # RFC 1624 eqn. 3 for a 16-bit / 32-bit field changing from m_old to m_new
    uint16_t checksum_update16 "vnfkit::packet::checksum_update16" (uint16_t hc, uint16_t m_old, uint16_t m_new) nogil
    uint16_t checksum_update32 "vnfkit::packet::checksum_update32" (uint16_t hc, uint32_t m_old, uint32_t m_new) nogil
    # offset of the checksum field in the L4 header of `proto`, -1 if none handled
    int l4_checksum_pos "vnfkit::packet::l4_checksum_pos" (uint8_t proto) nogil
    # per packet of a parsed batch: 1 if every checksum it carries is right
    void verify_checksums "vnfkit::packet::verify_checksums" (const PacketBatch& batch, uint8_t* out) nogil
    # recompute every checksum of every non-dropped packet of a parsed batch in full
    void fix_checksums "vnfkit::packet::fix_checksums" (PacketBatch& batch) nogil
    # IPv4 header checksum of hdr[0, n) as if its checksum field were zero
    uint16_t ipv4_header_checksum "vnfkit_ipv4_header_checksum" (const uint8_t* hdr, size_t n) nogil
    # TCP/UDP/ICMPv6 (pseudo header from src/dst, 4 or 16 bytes) or ICMPv4 checksum of l4[0, n)
    uint16_t l4_checksum "vnfkit_l4_checksum" (const uint8_t* src, const uint8_t* dst, bool v6, uint8_t proto,
                                               const uint8_t* l4, size_t n) nogil
