#include "vnfkit/packet/checksum.hpp"

#include "vnfkit/packet/parse.hpp"

namespace vnfkit::packet {

std::uint32_t sum_bytes(const std::uint8_t* p, std::size_t n, std::uint32_t sum) noexcept {
  // 64-bit accumulator so long buffers cannot overflow before the final fold.
  std::uint64_t s = sum;
  std::size_t i = 0;
  for (; i + 1 < n; i += 2) s += static_cast<std::uint32_t>((std::uint32_t{p[i]} << 8) | p[i + 1]);
  if (i < n) s += std::uint32_t{p[i]} << 8;
  s = (s & 0xFFFFFFFFull) + (s >> 32);
  s = (s & 0xFFFFFFFFull) + (s >> 32);
  return static_cast<std::uint32_t>(s);
}

std::uint16_t ipv4_header_checksum(std::span<const std::uint8_t> hdr) noexcept {
  std::uint32_t s = sum_bytes(hdr.data(), hdr.size() < 10 ? hdr.size() : 10);
  if (hdr.size() > 12) s = sum_bytes(hdr.data() + 12, hdr.size() - 12, s);
  return static_cast<std::uint16_t>(~fold(s));
}

std::uint16_t l4_checksum(const std::uint8_t* src, const std::uint8_t* dst, bool v6, std::uint8_t proto,
                          std::span<const std::uint8_t> l4) noexcept {
  const int pos = l4_checksum_pos(proto);
  std::uint32_t s = 0;
  if (proto != 1) {  // ICMPv4 has no pseudo header
    const std::size_t alen = v6 ? 16 : 4;
    s = sum_bytes(src, alen, s);
    s = sum_bytes(dst, alen, s);
    const auto len = static_cast<std::uint32_t>(l4.size());
    s += (len >> 16) + (len & 0xFFFF) + proto;
  }
  if (pos >= 0 && l4.size() >= static_cast<std::size_t>(pos) + 2) {
    const auto up = static_cast<std::size_t>(pos);
    s = sum_bytes(l4.data(), up, s);
    s = sum_bytes(l4.data() + up + 2, l4.size() - up - 2, s);  // up is even: pairs stay aligned
  } else {
    s = sum_bytes(l4.data(), l4.size(), s);
  }
  return static_cast<std::uint16_t>(~fold(s));
}

namespace {

inline std::uint16_t rd16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((std::uint16_t{p[0]} << 8) | p[1]);
}
inline void wr16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// Does the packet carry a whole L4 message whose checksum we can check / compute?
inline bool whole_l4(const PacketBatch& b, std::size_t i) noexcept {
  const std::uint8_t f = b.flags[i];
  if (f & kFlagFragment) return false;
  return l4_checksum_pos(b.key[i].proto) >= 0 && (f & kFlagHasL4);
}

}  // namespace

void verify_checksums(const PacketBatch& b, std::uint8_t* out) noexcept {
  const std::size_t n = b.size();
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = 0;
    if (b.drop[i] != 0) continue;
    const auto& k = b.key[i];
    if (k.family != 4 && k.family != 6) continue;
    const std::uint8_t* pkt = b.data.data() + b.offsets[i];
    const std::uint8_t* ip = pkt + b.l3_offset[i];
    bool ok = true;
    if (k.family == 4) {
      const std::size_t ihl = static_cast<std::size_t>(ip[0] & 0x0F) * 4;
      ok = ipv4_header_checksum({ip, ihl}) == rd16(ip + 10);
    }
    if (ok && whole_l4(b, i)) {
      const std::uint8_t* l4 = pkt + b.l4_offset[i];
      const auto pos = static_cast<std::size_t>(l4_checksum_pos(k.proto));
      const std::uint16_t stored = rd16(l4 + pos);
      if (k.proto == 17 && k.family == 4 && stored == 0) {
        ok = true;  // no checksum
      } else {
        const bool v6 = k.family == 6;
        const std::uint8_t* src = v6 ? ip + 8 : ip + 12;
        const std::uint8_t* dst = v6 ? ip + 24 : ip + 16;
        std::uint16_t c = l4_checksum(src, dst, v6, k.proto, {l4, b.l4_len[i]});
        if (k.proto == 17 && c == 0) c = 0xFFFF;
        ok = c == stored;
      }
    }
    out[i] = ok ? 1 : 0;
  }
}

void fix_checksums(PacketBatch& b) noexcept {
  const std::size_t n = b.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (b.drop[i] != 0) continue;
    const auto& k = b.key[i];
    if (k.family != 4 && k.family != 6) continue;
    std::uint8_t* pkt = b.data.data() + b.offsets[i];
    std::uint8_t* ip = pkt + b.l3_offset[i];
    if (k.family == 4) {
      const std::size_t ihl = static_cast<std::size_t>(ip[0] & 0x0F) * 4;
      wr16(ip + 10, ipv4_header_checksum({ip, ihl}));
    }
    if (whole_l4(b, i)) {
      std::uint8_t* l4 = pkt + b.l4_offset[i];
      const auto pos = static_cast<std::size_t>(l4_checksum_pos(k.proto));
      const bool v6 = k.family == 6;
      const std::uint8_t* src = v6 ? ip + 8 : ip + 12;
      const std::uint8_t* dst = v6 ? ip + 24 : ip + 16;
      std::uint16_t c = l4_checksum(src, dst, v6, k.proto, {l4, b.l4_len[i]});
      if (k.proto == 17 && c == 0) c = 0xFFFF;
      wr16(l4 + pos, c);
    }
  }
}

}  // namespace vnfkit::packet
