// In-place NAT rewrites of IPv4 packets with RFC 1624 incremental checksum updates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

enum class Side : std::uint8_t { kSource = 0, kDestination = 1 };

// The columns a rewrite loop reads, loaded once from a parsed batch: the byte stores into the
// packets may alias anything, so reading them through the batch would reload them for every packet.
// Also the prefetch of the IPv4 headers a few packets ahead (rows are scattered over the batch's
// data, often out of cache).
struct RewriteColumns {
  static constexpr std::size_t kAhead = 8;

  explicit RewriteColumns(PacketBatch& b) noexcept
      : data(b.data.data()), offsets(b.offsets.data()), l3_off(b.l3_offset.data()), l4_off(b.l4_offset.data()),
        l4_len(b.l4_len.data()), drop(b.drop.data()), flags(b.flags.data()), keys(b.key.data()) {}

  // Before a loop over rows[0, n): the IPv4 headers of its first kAhead packets.
  void prefetch_first(const std::uint32_t* rows, std::size_t n) const noexcept {
    for (std::size_t j = 0; j < n && j < kAhead; ++j) prefetch(rows[j]);
  }
  // In iteration j of that loop: the IPv4 header kAhead packets on.
  void prefetch_next(const std::uint32_t* rows, std::size_t j, std::size_t n) const noexcept {
    if (j + kAhead < n) prefetch(rows[j + kAhead]);
  }

  std::uint8_t* const data;
  const std::uint32_t* const offsets;
  const std::uint16_t* const l3_off;
  const std::uint16_t* const l4_off;
  const std::uint16_t* const l4_len;
  const std::uint8_t* const drop;
  const std::uint8_t* const flags;
  flow::FlowKey* const keys;

 private:
  void prefetch(std::size_t i) const noexcept { __builtin_prefetch(data + offsets[i] + l3_off[i], 1); }
};

// For each j < n: packet indices[j] of a parsed batch gets its IPv4 source (or destination) address
// set to addr[j] (host order) and, for TCP / UDP, its source (or destination) port set to port[j];
// for an ICMP echo request/reply the identifier is set to port[j] (the key's sport and dport both
// follow it, see parse.hpp). The IPv4 header checksum and the L4 checksum are updated
// incrementally (RFC 1624); a UDP checksum of 0 (none) stays 0, and one that would become 0 is
// written 0xFFFF. Non-first fragments get only their address (and IPv4 checksum) changed. The key
// column is updated to match. Packets that are dropped, not IPv4, or whose parse columns do not fit
// their bytes (columns_in_bounds, checksum.hpp) are left alone.
// Returns the number of packets rewritten. Throws std::invalid_argument (before touching anything)
// if an index is out of range.
std::size_t rewrite_v4(PacketBatch& batch, Side side, const std::uint32_t* indices, const std::uint32_t* addr,
                       const std::uint16_t* port, std::size_t n);

}  // namespace vnfkit::packet
