#include "vnfkit/packet/batch.hpp"

#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace vnfkit::packet {

namespace {

// Copies len bytes to dst, which is written once now and read back much later (an input record
// that waits in stable storage until a checkpoint prunes it). On x86 the bulk goes out through
// non-temporal stores: the destination lines are neither read in first nor left in the cache, so
// logging does not evict the caller's working set. Short copies, and the unaligned head and tail,
// use ordinary stores. The caller issues the store fence (finish_streaming) once per record.
constexpr std::size_t kStreamMin = 256;

void copy_cold(std::uint8_t* dst, const std::uint8_t* src, std::size_t len) noexcept {
#if defined(__SSE2__)
  if (len >= kStreamMin) {
    const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(dst) & 15)) & 15;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    len -= head;
    for (; len >= 64; len -= 64, dst += 64, src += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), d);
    }
  }
#endif
  if (len) std::memcpy(dst, src, len);
}

// Orders the non-temporal stores before any later store (the record's publication).
void finish_streaming() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace

std::string_view drop_reason_name(DropReason r) noexcept {
  switch (r) {
    case DropReason::kNone: return "";
    case DropReason::kTruncated: return "truncated";
    case DropReason::kBadEthertype: return "bad-ethertype";
    case DropReason::kBadIpVersion: return "bad-ip-version";
    case DropReason::kBadIhl: return "bad-ihl";
    case DropReason::kBadIpLength: return "bad-ip-length";
    case DropReason::kBadL4Header: return "bad-l4-header";
    case DropReason::kBadExtHeader: return "bad-ext-header";
    case DropReason::kPolicy: return "policy";
    case DropReason::kNoMapping: return "no-mapping";
    case DropReason::kPoolExhausted: return "pool-exhausted";
    case DropReason::kTableFull: return "table-full";
    case DropReason::kTtlExpired: return "ttl-expired";
    case DropReason::kOther: return "other";
    case DropReason::kCount_: break;
  }
  return "unknown";
}

void PacketBatch::resize_columns(std::size_t n) {
  ts_ns.resize(n);
  packet_id.resize(n);
  key.resize(n);
  hash.resize(n);
  flow_id.resize(n);
  queue.resize(n);
  port.resize(n);
  drop.resize(n);
  flags.resize(n);
  tcp_flags.resize(n);
  l3_offset.resize(n);
  l4_offset.resize(n);
  l4_len.resize(n);
}

void PacketBatch::clear() {
  data.clear();
  offsets.assign(1, 0);
  resize_columns(0);
}

void PacketBatch::append(std::span<const std::uint8_t> bytes, std::uint64_t ts_ns_value) {
  if (offsets.empty()) offsets.push_back(0);
  data.insert(data.end(), bytes.begin(), bytes.end());
  offsets.push_back(static_cast<std::uint32_t>(data.size()));
  const std::size_t n = size();
  resize_columns(n);
  ts_ns[n - 1] = ts_ns_value;
}

void PacketBatch::validate() const {
  const std::size_t n = size();
  if (!offsets.empty() && offsets[0] != 0) throw std::invalid_argument("offsets[0] must be 0");
  for (std::size_t i = 0; i < n; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      throw std::invalid_argument("offsets must be non-decreasing (at index " + std::to_string(i) + ")");
    }
  }
  if (!offsets.empty() && offsets[n] != data.size()) {
    throw std::invalid_argument("offsets[n] must equal the data length");
  }
  const auto check = [n](std::size_t m, const char* name) {
    if (m != n) throw std::invalid_argument(std::string("column '") + name + "' has the wrong length");
  };
  check(ts_ns.size(), "ts_ns");
  check(packet_id.size(), "packet_id");
  check(key.size(), "key");
  check(hash.size(), "hash");
  check(flow_id.size(), "flow_id");
  check(queue.size(), "queue");
  check(port.size(), "port");
  check(drop.size(), "drop");
  check(flags.size(), "flags");
  check(tcp_flags.size(), "tcp_flags");
  check(l3_offset.size(), "l3_offset");
  check(l4_offset.size(), "l4_offset");
  check(l4_len.size(), "l4_len");
}

std::size_t input_record_bytes(const PacketBatch& b) {
  b.validate();
  const std::size_t n = b.size();
  const std::size_t nbytes = n ? b.offsets[n] : 0;
  if (n > 0xFFFFFFFFull || nbytes > 0xFFFFFFFFull) throw std::invalid_argument("batch: too large for an input record");
  return 12 + 4 * b.offsets.size() + 16 * n + nbytes;
}

void write_input_record(const PacketBatch& b, std::uint8_t* out) {
  static_assert(std::endian::native == std::endian::little, "the record's header is little-endian");
  (void)input_record_bytes(b);  // validates
  const std::size_t n = b.size();
  const std::uint32_t head[2] = {static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(n ? b.offsets[n] : 0)};
  std::memcpy(out, "VKIB", 4);
  std::memcpy(out + 4, head, 8);
  out += 12;
  const auto put = [&out](const void* src, std::size_t len) {
    copy_cold(out, static_cast<const std::uint8_t*>(src), len);
    out += len;
  };
  put(b.offsets.data(), 4 * b.offsets.size());
  put(b.ts_ns.data(), 8 * n);
  put(b.packet_id.data(), 8 * n);
  put(b.data.data(), head[1]);
  finish_streaming();
}

PacketBatch read_input_record(std::span<const std::uint8_t> rec) {
  static_assert(std::endian::native == std::endian::little, "the record's header is little-endian");
  if (rec.size() < 12 || std::memcmp(rec.data(), "VKIB", 4) != 0) throw std::invalid_argument("input record: bad magic");
  std::uint32_t head[2];
  std::memcpy(head, rec.data() + 4, 8);
  const std::size_t n = head[0], nbytes = head[1];
  const std::size_t want = 12 + 4 * (n + 1) + 16 * n + nbytes;
  if (rec.size() != want) {
    throw std::invalid_argument("input record: " + std::to_string(rec.size()) + " bytes, expected " + std::to_string(want));
  }
  const std::uint8_t* p = rec.data() + 12;
  PacketBatch b;
  b.offsets.resize(n + 1);
  std::memcpy(b.offsets.data(), p, 4 * (n + 1));
  p += 4 * (n + 1);
  if (b.offsets[0] != 0 || b.offsets[n] != nbytes) throw std::invalid_argument("input record: offsets do not span its data");
  for (std::size_t i = 0; i < n; ++i) {
    if (b.offsets[i + 1] < b.offsets[i]) throw std::invalid_argument("input record: offsets decrease at " + std::to_string(i + 1));
  }
  b.resize_columns(n);
  if (n) {
    std::memcpy(b.ts_ns.data(), p, 8 * n);
    std::memcpy(b.packet_id.data(), p + 8 * n, 8 * n);
  }
  p += 16 * n;
  b.data.resize(nbytes);
  if (nbytes) std::memcpy(b.data.data(), p, nbytes);
  return b;
}

void assign_ids(PacketBatch& b, std::uint64_t first) {
  const std::size_t n = b.packet_id.size();
  if (n > 0 && first > ~std::uint64_t{0} - (n - 1)) {
    throw std::invalid_argument("first_id: " + std::to_string(first) + " + " + std::to_string(n) +
                                " packets overflows a 64-bit packet id");
  }
  std::uint64_t* id = b.packet_id.data();
  for (std::size_t i = 0; i < n; ++i) id[i] = first + i;
}

}  // namespace vnfkit::packet
