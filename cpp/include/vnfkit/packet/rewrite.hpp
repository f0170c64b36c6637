// In-place NAT rewrites of IPv4 packets with RFC 1624 incremental checksum updates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

enum class Side : std::uint8_t { kSource = 0, kDestination = 1 };

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
