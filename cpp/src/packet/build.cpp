#include "vnfkit/packet/build.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "vnfkit/packet/checksum.hpp"

namespace vnfkit::packet {
namespace {

inline void wr16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
inline void wr32(std::uint8_t* p, std::uint32_t v) noexcept {
  wr16(p, static_cast<std::uint16_t>(v >> 16));
  wr16(p + 2, static_cast<std::uint16_t>(v));
}

inline std::size_t l4_header_size(std::uint8_t proto) noexcept {
  switch (proto) {
    case 6: return 20;
    case 17: return 8;
    case 1: case 58: return 8;
    default: return 0;
  }
}

}  // namespace

std::size_t min_frame_size(const flow::FlowKey& k) noexcept {
  return 14 + (k.family == 6 ? 40u : 20u) + l4_header_size(k.proto);
}

PacketBatch build_packets(const flow::FlowKey* keys, const std::uint16_t* sizes, const std::uint64_t* ts_ns,
                          const std::uint8_t* tcp_flags, const std::uint32_t* seq, std::size_t n) {
  std::size_t total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& k = keys[i];
    const bool fam_ok = k.family == 4 || k.family == 6;
    const bool proto_ok = k.proto == 6 || k.proto == 17 || (k.family == 4 && k.proto == 1) ||
                          (k.family == 6 && k.proto == 58);
    if (!fam_ok || !proto_ok) {
      throw std::invalid_argument("keys: unsupported family/proto " + std::to_string(k.family) + "/" +
                                  std::to_string(k.proto) + " at index " + std::to_string(i));
    }
    const std::size_t mn = min_frame_size(k);
    total += sizes[i] > mn ? sizes[i] : mn;
  }
  if (total > 0xFFFFFFFFull) throw std::invalid_argument("sizes: more than 4 GiB of packets");
  PacketBatch b;
  b.data.assign(total, 0);
  b.offsets.resize(n + 1);
  b.offsets[0] = 0;
  b.resize_columns(n);
  std::size_t pos = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& k = keys[i];
    const std::size_t mn = min_frame_size(k);
    const std::size_t len = sizes[i] > mn ? sizes[i] : mn;
    std::uint8_t* p = b.data.data() + pos;
    // Ethernet
    static constexpr std::uint8_t kMacs[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};
    std::memcpy(p, kMacs, 12);
    const bool v6 = k.family == 6;
    wr16(p + 12, v6 ? 0x86DD : 0x0800);
    std::uint8_t* ip = p + 14;
    std::size_t iphl = v6 ? 40 : 20;
    const std::size_t l4len = len - 14 - iphl;
    const std::uint8_t* src = nullptr;
    const std::uint8_t* dst = nullptr;
    if (v6) {
      ip[0] = 0x60;
      wr16(ip + 4, static_cast<std::uint16_t>(l4len));
      ip[6] = k.proto;
      ip[7] = 64;
      std::memcpy(ip + 8, k.src.data(), 16);
      std::memcpy(ip + 24, k.dst.data(), 16);
      src = ip + 8;
      dst = ip + 24;
    } else {
      ip[0] = 0x45;
      wr16(ip + 2, static_cast<std::uint16_t>(len - 14));
      wr16(ip + 4, static_cast<std::uint16_t>(seq[i]));
      wr16(ip + 6, 0x4000);  // DF
      ip[8] = 64;
      ip[9] = k.proto;
      std::memcpy(ip + 12, k.src.data(), 4);
      std::memcpy(ip + 16, k.dst.data(), 4);
      wr16(ip + 10, ipv4_header_checksum({ip, 20}));
      src = ip + 12;
      dst = ip + 16;
    }
    std::uint8_t* l4 = ip + iphl;
    std::uint8_t tf = 0;
    switch (k.proto) {
      case 6: {
        tf = tcp_flags[i];
        wr16(l4, k.sport);
        wr16(l4 + 2, k.dport);
        wr32(l4 + 4, seq[i]);
        const bool ack = (tf & 0x10) != 0;
        wr32(l4 + 8, ack ? 1u : 0u);
        l4[12] = 5 << 4;
        l4[13] = tf;
        wr16(l4 + 14, 65535);
        break;
      }
      case 17:
        wr16(l4, k.sport);
        wr16(l4 + 2, k.dport);
        wr16(l4 + 4, static_cast<std::uint16_t>(l4len));
        break;
      default:  // ICMP / ICMPv6 echo request
        l4[0] = v6 ? 128 : 8;
        wr16(l4 + 4, k.sport);
        wr16(l4 + 6, static_cast<std::uint16_t>(seq[i]));
        break;
    }
    std::uint16_t c = l4_checksum(src, dst, v6, k.proto, {l4, l4len});
    if (k.proto == 17 && c == 0) c = 0xFFFF;
    wr16(l4 + l4_checksum_pos(k.proto), c);

    pos += len;
    b.offsets[i + 1] = static_cast<std::uint32_t>(pos);
    b.ts_ns[i] = ts_ns[i];
    b.packet_id[i] = i;
    b.key[i] = k;
    if (k.proto == 1 || k.proto == 58) b.key[i].dport = k.sport;
    b.key[i].pad = 0;
    if (!v6) {
      std::memset(b.key[i].src.data() + 4, 0, 12);
      std::memset(b.key[i].dst.data() + 4, 0, 12);
    }
    b.flags[i] = kFlagHasL4;
    b.tcp_flags[i] = tf;
    b.l3_offset[i] = 14;
    b.l4_offset[i] = static_cast<std::uint16_t>(14 + iphl);
    b.l4_len[i] = static_cast<std::uint16_t>(l4len);
  }
  return b;
}

}  // namespace vnfkit::packet
