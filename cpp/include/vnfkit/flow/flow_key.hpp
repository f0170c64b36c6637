// FlowKey: the canonical 5-tuple of a packet, IPv4 or IPv6, in one fixed 40-byte layout.
//
// Addresses are stored in network byte order. An IPv4 address occupies the first 4 bytes of its
// 16-byte field and the other 12 bytes are zero, so two keys compare equal exactly when their
// 5-tuples do. Ports are in host byte order (what Python users expect to read). The layout is what
// numpy sees through vnfkit.FLOW_KEY_DTYPE; do not reorder fields without changing that dtype.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vnfkit::flow {

enum class Family : std::uint8_t { kNone = 0, kIPv4 = 4, kIPv6 = 6 };

struct FlowKey {
  std::array<std::uint8_t, 16> src{};  // network byte order; IPv4 in bytes [0,4)
  std::array<std::uint8_t, 16> dst{};
  std::uint16_t sport = 0;             // host byte order; 0 when the packet has no ports
  std::uint16_t dport = 0;
  std::uint8_t proto = 0;              // IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
  std::uint8_t family = 0;             // Family: 0 (not IP), 4 or 6
  std::uint16_t pad = 0;               // always zero, so memcmp/hash over all 40 bytes is valid

  friend bool operator==(const FlowKey& a, const FlowKey& b) noexcept {
    return std::memcmp(&a, &b, sizeof(FlowKey)) == 0;
  }

  [[nodiscard]] std::uint32_t src_v4() const noexcept {  // host byte order
    return (std::uint32_t{src[0]} << 24) | (std::uint32_t{src[1]} << 16) |
           (std::uint32_t{src[2]} << 8) | std::uint32_t{src[3]};
  }
  [[nodiscard]] std::uint32_t dst_v4() const noexcept {
    return (std::uint32_t{dst[0]} << 24) | (std::uint32_t{dst[1]} << 16) |
           (std::uint32_t{dst[2]} << 8) | std::uint32_t{dst[3]};
  }

  // The key of the reply direction: addresses and ports swapped.
  [[nodiscard]] FlowKey reversed() const noexcept {
    FlowKey r = *this;
    r.src = dst;
    r.dst = src;
    r.sport = dport;
    r.dport = sport;
    return r;
  }
};

static_assert(sizeof(FlowKey) == 40, "FlowKey layout is part of the public numpy dtype");
static_assert(offsetof(FlowKey, sport) == 32 && offsetof(FlowKey, proto) == 36);

// Build an IPv4 key from host-order addresses (a convenience for tests and generators).
inline FlowKey make_v4_key(std::uint32_t src, std::uint32_t dst, std::uint16_t sport,
                           std::uint16_t dport, std::uint8_t proto) noexcept {
  FlowKey k;
  for (int i = 0; i < 4; ++i) {
    k.src[i] = static_cast<std::uint8_t>(src >> (24 - 8 * i));
    k.dst[i] = static_cast<std::uint8_t>(dst >> (24 - 8 * i));
  }
  k.sport = sport;
  k.dport = dport;
  k.proto = proto;
  k.family = static_cast<std::uint8_t>(Family::kIPv4);
  return k;
}

}  // namespace vnfkit::flow
