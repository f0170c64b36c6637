// PacketBatch: n packets in one contiguous byte buffer, plus one column per per-packet attribute.
//
// Packet i occupies data[offsets[i], offsets[i+1]). Columns all have n entries and are what Python
// sees as numpy views (vnfkit.PacketBatch). Elements rewrite headers in place and write `port`;
// port 0 means "drop" and `drop` then says why (DropReason).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "vnfkit/flow/flow_key.hpp"
#include "vnfkit/packet/buffer.hpp"

namespace vnfkit::packet {

// Why a packet was dropped. 0 = not dropped. Values are stable: they are stored in columns and CSVs.
enum class DropReason : std::uint8_t {
  kNone = 0,
  kTruncated = 1,        // shorter than a header it claims to have
  kBadEthertype = 2,     // not IPv4/IPv6 (after VLAN tags)
  kBadIpVersion = 3,     // version nibble disagrees with the ethertype
  kBadIhl = 4,           // IPv4 header length < 20 or beyond the packet
  kBadIpLength = 5,      // IPv4 total length / IPv6 payload length inconsistent with the frame
  kBadL4Header = 6,      // TCP data offset < 5, UDP length < 8, ...
  kBadExtHeader = 7,     // IPv6 extension header chain malformed or too long
  kPolicy = 8,           // dropped by a VNF's rule (firewall, rate limit, ...)
  kNoMapping = 9,        // inbound packet with no NAT mapping / unsolicited
  kPoolExhausted = 10,   // NAT port pool empty
  kTableFull = 11,       // a bounded table could not take a new flow
  kTtlExpired = 12,
  kOther = 13,
  kCount_ = 14,
};

std::string_view drop_reason_name(DropReason r) noexcept;

// Bits of PacketBatch::flags.
enum PacketFlag : std::uint8_t {
  kFlagFragment = 1u << 0,       // part of a fragmented IP datagram
  kFlagFirstFragment = 1u << 1,  // ... and it is the first fragment (carries the L4 header)
  kFlagHasL4 = 1u << 2,          // l4_offset points at a parsed TCP/UDP/ICMP header
  kFlagVlan = 1u << 3,           // at least one 802.1Q / QinQ tag
  kFlagIpOptions = 1u << 4,      // IPv4 options or IPv6 extension headers present
};

// pcap LINKTYPE_ values of the link-layer framings the parser understands.
inline constexpr std::uint32_t kLinkEthernet = 1;
inline constexpr std::uint32_t kLinkRaw = 101;       // raw IPv4 or IPv6 (version nibble decides)
inline constexpr std::uint32_t kLinkLinuxSll = 113;  // Linux cooked capture v1 (tcpdump -i any)
inline constexpr std::uint32_t kLinkIpv4 = 228;      // raw IPv4 only
inline constexpr std::uint32_t kLinkIpv6 = 229;      // raw IPv6 only
inline constexpr std::uint32_t kLinkLinuxSll2 = 276; // Linux cooked capture v2 (newer tcpdump -i any)

// Every column is a Buffer: numpy views of a column keep its memory alive even when the engine
// later reallocates it, and a batch can sit on external memory (a shared-memory pool slab).
struct PacketBatch {
  Buffer<std::uint8_t> data;       // all packet bytes, back to back
  std::uint32_t linktype = kLinkEthernet;  // link-layer framing of every packet (pcap LINKTYPE_)
  Buffer<std::uint32_t> offsets;   // n + 1 entries; offsets[0] == 0

  // Columns (n entries each).
  Buffer<std::uint64_t> ts_ns;      // arrival time, ns (from the pcap or the generator)
  Buffer<std::uint64_t> packet_id;  // unique, increasing id (determinants refer to it)
  Buffer<flow::FlowKey> key;        // parsed 5-tuple
  Buffer<std::uint32_t> hash;       // RSS (Toeplitz) hash of the key
  Buffer<std::uint32_t> flow_id;    // 32-bit flow ID (direction-independent) for range tables
  Buffer<std::uint16_t> queue;      // receive queue chosen by the classifier
  Buffer<std::uint16_t> port;       // output port; 0 = drop
  Buffer<std::uint8_t> drop;        // DropReason
  Buffer<std::uint8_t> flags;       // PacketFlag bits
  Buffer<std::uint8_t> tcp_flags;   // TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10)
  Buffer<std::uint16_t> l3_offset;  // start of the IP header within the packet
  Buffer<std::uint16_t> l4_offset;  // start of the L4 header (valid if kFlagHasL4)
  Buffer<std::uint16_t> l4_len;     // bytes from l4_offset to the end of the IP payload

  [[nodiscard]] std::size_t size() const noexcept { return offsets.empty() ? 0 : offsets.size() - 1; }
  [[nodiscard]] std::span<std::uint8_t> packet(std::size_t i) noexcept {
    return {data.data() + offsets[i], offsets[i + 1] - offsets[i]};
  }
  [[nodiscard]] std::span<const std::uint8_t> packet(std::size_t i) const noexcept {
    return {data.data() + offsets[i], offsets[i + 1] - offsets[i]};
  }

  // Resize every column to n (new entries zeroed). offsets/data are left to the caller.
  void resize_columns(std::size_t n);
  void clear();
  // Append one packet's bytes (columns grow with zeroed entries; the caller sets ts/ids).
  void append(std::span<const std::uint8_t> bytes, std::uint64_t ts_ns_value);
  // Throws std::invalid_argument if offsets/columns are inconsistent.
  void validate() const;
};

// The input log's record of a batch (what a backup replays): "VKIB" | u32 packets | u32 data bytes
// (little-endian) | offsets (as held: packets + 1) | ts_ns | packet_id | packet bytes. Parsed
// columns and decisions are not part of it. Both throw std::invalid_argument (naming the field) for
// an inconsistent batch or one too large for the u32 header fields.
[[nodiscard]] std::size_t input_record_bytes(const PacketBatch& b);
void write_input_record(const PacketBatch& b, std::uint8_t* out);  // out: input_record_bytes(b) bytes
// The batch a record holds (unparsed; timestamps and ids as written). Throws std::invalid_argument
// naming what is wrong for a damaged record (magic, size, offsets).
[[nodiscard]] PacketBatch read_input_record(std::span<const std::uint8_t> record);
// packet_id[i] = first + i; throws std::invalid_argument (touching nothing) if the ids would wrap.
void assign_ids(PacketBatch& b, std::uint64_t first);

}  // namespace vnfkit::packet
