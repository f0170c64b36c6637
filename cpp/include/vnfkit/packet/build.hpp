// Packet builder for the traffic generator: Ethernet + IPv4/IPv6 + TCP/UDP/ICMP(v6) echo frames
// with valid checksums, built straight into a PacketBatch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vnfkit/flow/flow_key.hpp"
#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

// Smallest frame (Ethernet + IP + L4 header, no payload) for a key (family 4/6, proto 6/17/1/58).
std::size_t min_frame_size(const flow::FlowKey& key) noexcept;

// Build n frames: frame i has key keys[i] (family 4 or 6; proto 6 TCP, 17 UDP, 1 ICMP / 58 ICMPv6
// echo request with identifier keys[i].sport), total length max(sizes[i], min_frame_size) bytes
// (zero payload; IP length fields cover the whole frame after Ethernet), timestamp ts_ns[i], TCP flags
// tcp_flags[i] (TCP only; SYN-only packets carry ack 0), and seq[i] as TCP sequence number (or
// ICMP echo sequence). IPv4: TTL 64, DF, id = seq[i] & 0xffff. MACs 02:00:00:00:00:01 -> :02.
// packet_id = i. Throws std::invalid_argument for an unsupported family/proto (naming the index).
PacketBatch build_packets(const flow::FlowKey* keys, const std::uint16_t* sizes, const std::uint64_t* ts_ns,
                          const std::uint8_t* tcp_flags, const std::uint32_t* seq, std::size_t n);

}  // namespace vnfkit::packet
