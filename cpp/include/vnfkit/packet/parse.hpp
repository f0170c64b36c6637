// Header parser: fills a PacketBatch's key / flags / tcp_flags / l3_offset / l4_offset / l4_len.
//
// Link layers (PacketBatch::linktype): Ethernet (1), raw IP (101; 228 IPv4 only; 229 IPv6 only), Linux
// cooked capture SLL (113) and SLL2 (276); l3_offset then says where the IP header starts. Any other
// link type marks every packet kBadEthertype: check parse_supports() first and refuse the input.
// Supported on Ethernet II: up to 4 802.1Q (0x8100) / QinQ (0x88a8, 0x9100) tags; IPv4 (options,
// fragments); IPv6 with hop-by-hop (0), routing (43), fragment (44), destination options (60) and
// AH (51) extension headers (at most kMaxIpv6ExtHeaders of them); TCP, UDP, ICMP, ICMPv6.
//
// Conventions for the key (FlowKey):
// - TCP / UDP: sport, dport from the header (host order).
// - ICMP / ICMPv6 echo request and reply (v4 types 8/0, v6 types 128/129): sport = dport = the echo
//   identifier, so that the request's key reversed equals the reply's key and a NAT can rewrite the
//   identifier like a port.
// - Any other ICMP / ICMPv6 message: sport = 0, dport = (type << 8) | code.
// - Other IP protocols, and non-first fragments: sport = dport = 0, no kFlagHasL4. proto is still set
//   (for IPv6, the protocol after the extension headers).
// - l4_offset / l4_len always describe the IP payload after options / extension headers (also when
//   kFlagHasL4 is clear); l4_len excludes Ethernet padding (it comes from the IP length fields).
// - tcp_flags: the TCP flags byte (0 for non-TCP).
// Malformed packets (see DropReason) get drop != 0, port = 0, key zeroed, kFlagHasL4 clear; they are
// never read out of bounds. Non-IP ethertypes (ARP, ...) are kBadEthertype drops. Good packets get
// drop = 0 and keep their port.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

inline constexpr int kMaxVlanTags = 4;
inline constexpr int kMaxIpv6ExtHeaders = 8;

// True if parse_range understands packets of this link type.
bool parse_supports(std::uint32_t linktype) noexcept;

// A one-line description of the link types parse_range understands (for error messages).
inline constexpr const char* kSupportedLinktypes =
    "Ethernet (1), raw IP (101, 228 IPv4, 229 IPv6), Linux cooked SLL (113) and SLL2 (276)";

// Parse packets [begin, end) of the batch. Returns the number of malformed (dropped) packets.
std::size_t parse_range(PacketBatch& batch, std::size_t begin, std::size_t end) noexcept;

// Parse the whole batch. Returns the number of malformed packets.
inline std::size_t parse_batch(PacketBatch& batch) noexcept { return parse_range(batch, 0, batch.size()); }

// Counts of drop reasons over the batch (index = DropReason value).
void count_drops(const PacketBatch& batch, std::size_t (&counts)[static_cast<int>(DropReason::kCount_)]) noexcept;

// A new batch with the packets at `indices` (in that order) and all their columns.
// Throws std::invalid_argument if an index is out of range.
PacketBatch select(const PacketBatch& batch, const std::uint32_t* indices, std::size_t n);

}  // namespace vnfkit::packet
