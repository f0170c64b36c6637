// Internet checksums (RFC 1071) and incremental updates (RFC 1624).
//
// All sums work on 16-bit words in network byte order. `sum_bytes` returns an unfolded 32-bit
// partial sum; `fold` reduces it to 16 bits; the checksum to write is `~fold(sum)`.
// Full computation and verification of IPv4 header / TCP / UDP / ICMP / ICMPv6 checksums work on a
// batch that has been parsed (parse.hpp), using its l3_offset / l4_offset / l4_len / key / flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

// Ones'-complement partial sum of bytes (an odd trailing byte is padded with zero), added to `sum`.
std::uint32_t sum_bytes(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) noexcept;

// Fold a 32-bit partial sum to 16 bits (end-around carry).
constexpr std::uint16_t fold(std::uint32_t sum) noexcept {
  sum = (sum & 0xFFFFu) + (sum >> 16);
  sum = (sum & 0xFFFFu) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit field changing from m to m'.
constexpr std::uint16_t checksum_update16(std::uint16_t hc, std::uint16_t m_old, std::uint16_t m_new) noexcept {
  const std::uint32_t s = static_cast<std::uint32_t>(static_cast<std::uint16_t>(~hc)) +
                          static_cast<std::uint16_t>(~m_old) + m_new;
  return static_cast<std::uint16_t>(~fold(s));
}

// The same for a 32-bit field (an IPv4 address), both words at once.
constexpr std::uint16_t checksum_update32(std::uint16_t hc, std::uint32_t m_old, std::uint32_t m_new) noexcept {
  const std::uint32_t s = static_cast<std::uint32_t>(static_cast<std::uint16_t>(~hc)) +
                          static_cast<std::uint16_t>(~(m_old >> 16)) + static_cast<std::uint16_t>(~m_old) +
                          (m_new >> 16) + (m_new & 0xFFFFu);
  return static_cast<std::uint16_t>(~fold(s));
}

// IPv4 header checksum of `hdr` (ihl*4 bytes), computed as if the checksum field were zero.
std::uint16_t ipv4_header_checksum(std::span<const std::uint8_t> hdr) noexcept;

// L4 checksum (TCP/UDP/ICMPv6 with the pseudo header; ICMPv4 without) over `l4` (header+payload),
// computed as if the checksum field at `csum_pos` were zero. `src`/`dst` point at 4 or 16 address
// bytes (network order) according to `v6`.
std::uint16_t l4_checksum(const std::uint8_t* src, const std::uint8_t* dst, bool v6, std::uint8_t proto,
                          std::span<const std::uint8_t> l4) noexcept;

// Offset of the checksum field within the L4 header for `proto`, or -1 if it has none we handle.
constexpr int l4_checksum_pos(std::uint8_t proto) noexcept {
  switch (proto) {
    case 6: return 16;   // TCP
    case 17: return 6;   // UDP
    case 1: return 2;    // ICMP
    case 58: return 2;   // ICMPv6
    default: return -1;
  }
}

// True if packet i's parse columns (l3_offset, l4_offset, l4_len, key.family/proto, kFlagHasL4) fit
// inside its bytes, so that checksum and rewrite code may follow them. Columns are writable from
// Python, so verify / fix / rewrite check this per packet and skip (verify: report 0) packets that fail.
bool columns_in_bounds(const PacketBatch& batch, std::size_t i) noexcept;

// The IPv4 case of columns_in_bounds on columns already loaded (for loops that keep the column
// pointers in registers): packet bytes `pkt` (`len` of them) whose IP header starts at l3 and, if
// has_l4, whose L4 header of protocol `proto` spans l4 .. l4 + l4len.
constexpr bool v4_columns_in_bounds(const std::uint8_t* pkt, std::size_t len, std::size_t l3, bool has_l4,
                                    std::size_t l4, std::size_t l4len, std::uint8_t proto) noexcept {
  if (l3 + 20 > len) return false;
  const std::size_t iph = static_cast<std::size_t>(pkt[l3] & 0x0F) * 4;
  if (iph < 20 || l3 + iph > len) return false;
  if (!has_l4) return true;
  if (l4 < l3 + iph || l4 + l4len > len) return false;
  const std::size_t need = proto == 6 ? 20 : (proto == 17 || proto == 1) ? 8 : proto == 58 ? 4 : 0;
  return l4len >= need;
}

// Per packet of a parsed batch: 1 if every checksum it carries is right (IPv4 header; TCP / UDP /
// ICMP / ICMPv6 of unfragmented datagrams; a UDP/IPv4 checksum of 0 means "none" and is right),
// 0 otherwise. Dropped (malformed) packets, and packets failing columns_in_bounds, are 0. `out` has batch.size() entries.
void verify_checksums(const PacketBatch& batch, std::uint8_t* out) noexcept;

// Recompute every checksum of every non-dropped packet of a parsed batch in full (generated
// packets, or after arbitrary edits). Fragments get only their IPv4 header checksum fixed.
void fix_checksums(PacketBatch& batch) noexcept;

}  // namespace vnfkit::packet
