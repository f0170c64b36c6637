#include "vnfkit/packet/rewrite.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

#include "vnfkit/packet/bytes.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/parse.hpp"

namespace vnfkit::packet {
namespace {

using be::rd16;
using be::rd32;
using be::wr16;
using be::wr32;

}  // namespace

std::size_t rewrite_v4(PacketBatch& b, Side side, const std::uint32_t* indices, const std::uint32_t* addr,
                       const std::uint16_t* port, std::size_t n) {
  const std::size_t m = b.size();
  for (std::size_t j = 0; j < n; ++j) {
    if (indices[j] >= m) {
      throw std::invalid_argument("indices: index " + std::to_string(indices[j]) + " out of range for a batch of " +
                                  std::to_string(m));
    }
  }
  const RewriteColumns col(b);
  const bool src_side = side == Side::kSource;
  const std::size_t addr_at = src_side ? 12 : 16;
  const std::size_t port_at = src_side ? 0 : 2;
  std::size_t done = 0;
  col.prefetch_first(indices, n);
  for (std::size_t j = 0; j < n; ++j) {
    col.prefetch_next(indices, j, n);
    const std::size_t i = indices[j];
    flow::FlowKey& k = col.keys[i];
    if (col.drop[i] != 0 || k.family != 4) continue;
    std::uint8_t* const pkt = col.data + col.offsets[i];
    const std::size_t l3 = col.l3_off[i];
    const std::uint8_t f = col.flags[i];
    const bool has_l4 = (f & kFlagHasL4) != 0;
    const std::uint8_t proto = k.proto;
    if (!v4_columns_in_bounds(pkt, col.offsets[i + 1] - col.offsets[i], l3, has_l4, col.l4_off[i], col.l4_len[i],
                              proto)) {
      continue;
    }
    std::uint8_t* const ip = pkt + l3;
    std::uint8_t* const a = ip + addr_at;
    const std::uint32_t old_addr = rd32(a);
    const std::uint32_t new_addr = addr[j];
    wr32(a, new_addr);
    wr16(ip + 10, checksum_update32(rd16(ip + 10), old_addr, new_addr));
    wr32((src_side ? k.src : k.dst).data(), new_addr);

    if (has_l4) {
      std::uint8_t* l4 = pkt + col.l4_off[i];
      const std::uint16_t new_port = port[j];
      if (proto == 6 || proto == 17) {
        std::uint8_t* pp = l4 + port_at;
        std::uint8_t* cp = l4 + (proto == 6 ? 16 : 6);
        const std::uint16_t old_port = rd16(pp);
        wr16(pp, new_port);
        std::uint16_t c = rd16(cp);
        if (!(proto == 17 && c == 0)) {
          // address and port in one RFC 1624 update (the same result as one after the other:
          // ones'-complement sums are associative and fold to 0 only for a zero sum)
          const std::uint32_t s = static_cast<std::uint32_t>(static_cast<std::uint16_t>(~c)) +
                                  static_cast<std::uint16_t>(~(old_addr >> 16)) +
                                  static_cast<std::uint16_t>(~old_addr) + (new_addr >> 16) + (new_addr & 0xFFFFu) +
                                  static_cast<std::uint16_t>(~old_port) + new_port;
          c = static_cast<std::uint16_t>(~fold(s));
          if (proto == 17 && c == 0) c = 0xFFFF;
          wr16(cp, c);
        }
        (src_side ? k.sport : k.dport) = new_port;
      } else if (proto == 1 && k.sport == k.dport && (l4[0] == 8 || l4[0] == 0)) {
        // ICMP echo: the identifier plays the port; no pseudo header, so the address is not summed.
        const std::uint16_t old_id = rd16(l4 + 4);
        wr16(l4 + 4, new_port);
        wr16(l4 + 2, checksum_update16(rd16(l4 + 2), old_id, new_port));
        k.sport = k.dport = new_port;
      }
    }
    ++done;
  }
  return done;
}

}  // namespace vnfkit::packet
