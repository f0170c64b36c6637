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

bool columns_in_bounds(const PacketBatch& b, std::size_t i) noexcept {
  const std::size_t len = b.offsets[i + 1] - b.offsets[i];
  const std::uint8_t* pkt = b.data.data() + b.offsets[i];
  const std::size_t l3 = b.l3_offset[i];
  const auto& k = b.key[i];
  if (k.family == 4) {
    return v4_columns_in_bounds(pkt, len, l3, (b.flags[i] & kFlagHasL4) != 0, b.l4_offset[i], b.l4_len[i], k.proto);
  }
  if (k.family != 6) return false;
  const std::size_t iph = 40;
  if (l3 + 40 > len) return false;
  if (b.flags[i] & kFlagHasL4) {
    const std::size_t l4 = b.l4_offset[i];
    const std::size_t l4len = b.l4_len[i];
    if (l4 < l3 + iph || l4 + l4len > len) return false;
    std::size_t need = 0;
    switch (k.proto) {
      case 6: need = 20; break;
      case 17: need = 8; break;
      case 1: need = 8; break;
      case 58: need = 4; break;
      default: need = 0;
    }
    if (l4len < need) return false;
  }
  return true;
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

// IPv6 upper-layer checksums use the *final* destination: with a routing header that still has
// segments left, that is the last address of a type 0 / 2 header or segment 0 of an SRH (type 4).
// `ext_end` = bytes from the IPv6 header start to the L4 header (the parser validated the chain).
inline const std::uint8_t* v6_pseudo_dst(const std::uint8_t* ip, std::size_t ext_end) noexcept {
  const std::uint8_t* dst = ip + 24;
  std::uint8_t nh = ip[6];
  std::size_t off = 40;
  while (off + 8 <= ext_end) {
    std::size_t hlen = 0;
    if (nh == 0 || nh == 43 || nh == 60) {
      hlen = (static_cast<std::size_t>(ip[off + 1]) + 1) * 8;
    } else if (nh == 51) {
      hlen = (static_cast<std::size_t>(ip[off + 1]) + 2) * 4;
    } else if (nh == 44) {
      hlen = 8;
    } else {
      break;
    }
    if (off + hlen > ext_end) break;
    if (nh == 43 && ip[off + 3] != 0) {  // segments left
      const std::uint8_t type = ip[off + 2];
      const std::size_t naddr = (hlen - 8) / 16;
      if ((type == 0 || type == 2) && naddr > 0) dst = ip + off + 8 + (naddr - 1) * 16;
      if (type == 4 && naddr > 0) dst = ip + off + 8;
    }
    nh = ip[off];
    off += hlen;
  }
  return dst;
}

}  // namespace

void verify_checksums(const PacketBatch& b, std::uint8_t* out) noexcept {
  const std::size_t n = b.size();
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = 0;
    if (b.drop[i] != 0 || !columns_in_bounds(b, i)) continue;
    const auto& k = b.key[i];
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
        const std::uint8_t* dst = v6 ? v6_pseudo_dst(ip, b.l4_offset[i] - b.l3_offset[i]) : ip + 16;
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
    if (b.drop[i] != 0 || !columns_in_bounds(b, i)) continue;
    const auto& k = b.key[i];
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
      const std::uint8_t* dst = v6 ? v6_pseudo_dst(ip, b.l4_offset[i] - b.l3_offset[i]) : ip + 16;
      std::uint16_t c = l4_checksum(src, dst, v6, k.proto, {l4, b.l4_len[i]});
      if (k.proto == 17 && c == 0) c = 0xFFFF;
      wr16(l4 + pos, c);
    }
  }
}

}  // namespace vnfkit::packet
