#include "vnfkit/packet/parse.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

namespace vnfkit::packet {
namespace {

inline std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((std::uint16_t{p[0]} << 8) | p[1]);
}

struct Parsed {
  flow::FlowKey key{};
  std::uint8_t flags = 0;
  std::uint8_t tcp_flags = 0;
  std::uint16_t l3 = 0;
  std::uint16_t l4 = 0;
  std::uint16_t l4_len = 0;
};

// Fill ports / tcp flags for an L4 header at p (len bytes of IP payload). Returns a drop reason.
inline DropReason parse_l4(const std::uint8_t* p, std::size_t len, Parsed& r) noexcept {
  switch (r.key.proto) {
    case 6: {  // TCP
      if (len < 20) return DropReason::kTruncated;
      const unsigned doff = p[12] >> 4;
      if (doff < 5 || doff * 4u > len) return DropReason::kBadL4Header;
      r.key.sport = be16(p);
      r.key.dport = be16(p + 2);
      r.tcp_flags = p[13];
      r.flags |= kFlagHasL4;
      return DropReason::kNone;
    }
    case 17: {  // UDP
      if (len < 8) return DropReason::kTruncated;
      const std::uint16_t ulen = be16(p + 4);
      if (ulen < 8 || ulen > len) return DropReason::kBadL4Header;
      r.key.sport = be16(p);
      r.key.dport = be16(p + 2);
      r.flags |= kFlagHasL4;
      return DropReason::kNone;
    }
    case 1:     // ICMP
    case 58: {  // ICMPv6
      const bool v6 = r.key.proto == 58;
      if (len < (v6 ? 4u : 8u)) return DropReason::kTruncated;
      const std::uint8_t type = p[0];
      const bool echo = v6 ? (type == 128 || type == 129) : (type == 8 || type == 0);
      if (echo) {
        if (len < 8) return DropReason::kTruncated;
        r.key.sport = r.key.dport = be16(p + 4);
      } else {
        r.key.sport = 0;
        r.key.dport = static_cast<std::uint16_t>((type << 8) | p[1]);
      }
      r.flags |= kFlagHasL4;
      return DropReason::kNone;
    }
    default:
      return DropReason::kNone;
  }
}

inline DropReason parse_ipv4(const std::uint8_t* p, std::size_t len, Parsed& r) noexcept {
  if (len < 20) return DropReason::kTruncated;
  if ((p[0] >> 4) != 4) return DropReason::kBadIpVersion;
  const std::size_t ihl = static_cast<std::size_t>(p[0] & 0x0F) * 4;
  if (ihl < 20 || ihl > len) return DropReason::kBadIhl;
  const std::size_t total = be16(p + 2);
  if (total < ihl || total > len) return DropReason::kBadIpLength;
  if (ihl > 20) r.flags |= kFlagIpOptions;
  r.key.family = 4;
  r.key.proto = p[9];
  std::memcpy(r.key.src.data(), p + 12, 4);
  std::memcpy(r.key.dst.data(), p + 16, 4);
  r.l4 = static_cast<std::uint16_t>(r.l3 + ihl);
  r.l4_len = static_cast<std::uint16_t>(total - ihl);
  const std::uint16_t frag = be16(p + 6);
  const bool more = (frag & 0x2000) != 0;
  const std::uint16_t foff = frag & 0x1FFF;
  if (more || foff != 0) {
    r.flags |= kFlagFragment;
    if (foff != 0) return DropReason::kNone;  // non-first fragment: no ports
    r.flags |= kFlagFirstFragment;
  }
  return parse_l4(p + ihl, total - ihl, r);
}

inline DropReason parse_ipv6(const std::uint8_t* p, std::size_t len, Parsed& r) noexcept {
  if (len < 40) return DropReason::kTruncated;
  if ((p[0] >> 4) != 6) return DropReason::kBadIpVersion;
  const std::size_t payload = be16(p + 4);
  if (40 + payload > len) return DropReason::kBadIpLength;
  r.key.family = 6;
  std::memcpy(r.key.src.data(), p + 8, 16);
  std::memcpy(r.key.dst.data(), p + 24, 16);
  std::uint8_t nh = p[6];
  std::size_t off = 40;
  const std::size_t end = 40 + payload;
  bool non_first_fragment = false;
  for (int count = 0;; ++count) {
    std::size_t hlen = 0;
    if (nh == 0 || nh == 43 || nh == 60) {
      if (off + 8 > end) return DropReason::kBadExtHeader;
      hlen = (static_cast<std::size_t>(p[off + 1]) + 1) * 8;
    } else if (nh == 51) {  // AH: length in 4-octet units minus 2
      if (off + 8 > end) return DropReason::kBadExtHeader;
      hlen = (static_cast<std::size_t>(p[off + 1]) + 2) * 4;
    } else if (nh == 44) {
      if (off + 8 > end) return DropReason::kBadExtHeader;
      hlen = 8;
      const std::uint16_t fo = be16(p + off + 2);
      r.flags |= kFlagFragment;
      if ((fo & 0xFFF8) != 0) {
        non_first_fragment = true;
      } else {
        r.flags |= kFlagFirstFragment;
      }
    } else {
      break;
    }
    if (count >= kMaxIpv6ExtHeaders || off + hlen > end) return DropReason::kBadExtHeader;
    r.flags |= kFlagIpOptions;
    nh = p[off];
    off += hlen;
    if (non_first_fragment) break;
  }
  r.key.proto = nh;
  r.l4 = static_cast<std::uint16_t>(r.l3 + off);
  r.l4_len = static_cast<std::uint16_t>(end - off);
  if (non_first_fragment) return DropReason::kNone;
  return parse_l4(p + off, end - off, r);
}

// Walk VLAN tags from an ethertype `et` that sits at byte `off` (the tag body follows at off + 2),
// then parse the IP header after it.
inline DropReason parse_from_ethertype(const std::uint8_t* p, std::size_t len, std::size_t off, std::uint16_t et,
                                       Parsed& r) noexcept {
  int tags = 0;
  while (et == 0x8100 || et == 0x88a8 || et == 0x9100) {
    if (++tags > kMaxVlanTags) return DropReason::kBadEthertype;
    if (off + 6 > len) return DropReason::kTruncated;
    off += 4;
    et = be16(p + off);
    r.flags |= kFlagVlan;
  }
  off += 2;
  r.l3 = static_cast<std::uint16_t>(off);
  if (et == 0x0800) return parse_ipv4(p + off, len - off, r);
  if (et == 0x86DD) return parse_ipv6(p + off, len - off, r);
  return DropReason::kBadEthertype;
}

// An IP packet with no link-layer header; `want` is 4, 6 or 0 (either).
inline DropReason parse_raw(const std::uint8_t* p, std::size_t len, unsigned want, Parsed& r) noexcept {
  if (len < 1) return DropReason::kTruncated;
  const unsigned v = p[0] >> 4;
  r.l3 = 0;
  if (v == 4 && want != 6) return parse_ipv4(p, len, r);
  if (v == 6 && want != 4) return parse_ipv6(p, len, r);
  return DropReason::kBadIpVersion;
}

inline DropReason parse_one(const std::uint8_t* p, std::size_t len, std::uint32_t linktype, Parsed& r) noexcept {
  switch (linktype) {
    case kLinkEthernet:
      if (len < 14) return DropReason::kTruncated;
      return parse_from_ethertype(p, len, 12, be16(p + 12), r);
    case kLinkLinuxSll:  // 16-byte header, protocol (ethertype) in its last two bytes
      if (len < 16) return DropReason::kTruncated;
      return parse_from_ethertype(p, len, 14, be16(p + 14), r);
    case kLinkLinuxSll2:  // 20-byte header, protocol (ethertype) in its first two bytes
      if (len < 20) return DropReason::kTruncated;
      return parse_from_ethertype(p, len, 18, be16(p), r);
    case kLinkRaw: return parse_raw(p, len, 0, r);
    case kLinkIpv4: return parse_raw(p, len, 4, r);
    case kLinkIpv6: return parse_raw(p, len, 6, r);
    default: return DropReason::kBadEthertype;
  }
}

}  // namespace

bool parse_supports(std::uint32_t linktype) noexcept {
  switch (linktype) {
    case kLinkEthernet: case kLinkLinuxSll: case kLinkLinuxSll2: case kLinkRaw: case kLinkIpv4: case kLinkIpv6:
      return true;
    default:
      return false;
  }
}

std::size_t parse_range(PacketBatch& b, std::size_t begin, std::size_t end) noexcept {
  std::size_t bad = 0;
  const std::uint8_t* data = b.data.data();
  const std::uint32_t* offs = b.offsets.data();
  const std::uint32_t linktype = b.linktype;
  for (std::size_t i = begin; i < end; ++i) {
    Parsed r;
    const std::uint32_t o = offs[i];
    std::size_t len = offs[i + 1] - o;
    if (len > 0xFFFF) len = 0xFFFF;  // offsets are 16-bit; IP lengths never exceed this anyway
    const DropReason why = parse_one(data + o, len, linktype, r);
    if (why == DropReason::kNone) {
      b.key[i] = r.key;
      b.flags[i] = r.flags;
      b.tcp_flags[i] = r.tcp_flags;
      b.l3_offset[i] = r.l3;
      b.l4_offset[i] = r.l4;
      b.l4_len[i] = r.l4_len;
      b.drop[i] = 0;
    } else {
      b.key[i] = flow::FlowKey{};
      b.flags[i] = static_cast<std::uint8_t>(r.flags & (kFlagVlan | kFlagIpOptions | kFlagFragment | kFlagFirstFragment));
      b.tcp_flags[i] = 0;
      b.l3_offset[i] = r.l3;
      b.l4_offset[i] = 0;
      b.l4_len[i] = 0;
      b.drop[i] = static_cast<std::uint8_t>(why);
      b.port[i] = 0;
      ++bad;
    }
  }
  return bad;
}

void count_drops(const PacketBatch& b, std::size_t (&counts)[static_cast<int>(DropReason::kCount_)]) noexcept {
  for (auto& c : counts) c = 0;
  constexpr auto kN = static_cast<std::uint8_t>(DropReason::kCount_);
  for (std::uint8_t d : b.drop) {
    if (d < kN) ++counts[d]; else ++counts[static_cast<int>(DropReason::kOther)];
  }
}

PacketBatch select(const PacketBatch& b, const std::uint32_t* idx, std::size_t n) {
  const std::size_t m = b.size();
  std::size_t total = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (idx[j] >= m) {
      throw std::invalid_argument("indices: index " + std::to_string(idx[j]) + " out of range for a batch of " +
                                  std::to_string(m));
    }
    total += b.offsets[idx[j] + 1] - b.offsets[idx[j]];
  }
  if (total > 0xFFFFFFFFull) throw std::invalid_argument("indices: selection exceeds 4 GiB of packet data");
  PacketBatch r;
  r.linktype = b.linktype;
  r.data.resize(total);
  r.offsets.resize(n + 1);
  r.offsets[0] = 0;
  r.resize_columns(n);
  std::size_t pos = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t i = idx[j];
    const std::size_t len = b.offsets[i + 1] - b.offsets[i];
    if (len) std::memcpy(r.data.data() + pos, b.data.data() + b.offsets[i], len);
    pos += len;
    r.offsets[j + 1] = static_cast<std::uint32_t>(pos);
    r.ts_ns[j] = b.ts_ns[i];
    r.packet_id[j] = b.packet_id[i];
    r.key[j] = b.key[i];
    r.hash[j] = b.hash[i];
    r.flow_id[j] = b.flow_id[i];
    r.queue[j] = b.queue[i];
    r.port[j] = b.port[i];
    r.drop[j] = b.drop[i];
    r.flags[j] = b.flags[i];
    r.tcp_flags[j] = b.tcp_flags[i];
    r.l3_offset[j] = b.l3_offset[i];
    r.l4_offset[j] = b.l4_offset[i];
    r.l4_len[j] = b.l4_len[i];
  }
  return r;
}

}  // namespace vnfkit::packet
