#include "vnfkit/snapshot/snapshot.hpp"

#include <array>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace vnfkit::snapshot {
namespace {

constexpr char kMagic[8] = {'V', 'N', 'F', 'K', 'S', 'N', 'A', 'P'};

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

std::uint32_t crc32c_sw(const std::uint8_t* p, std::size_t n, std::uint32_t crc) noexcept {
  for (std::size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc32c_hw(const std::uint8_t* p, std::size_t n,
                                                          std::uint32_t crc) noexcept {
  std::uint64_t c = crc;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

// resize + memcpy rather than vector::insert: GCC 12 reports false stringop-overflow warnings on
// the latter for small constant-size ranges.
void append_raw(std::vector<std::uint8_t>& out, const void* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void append_le(std::vector<std::uint8_t>& out, T v) {
  append_raw(out, &v, sizeof(T));
}

}  // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc) noexcept {
  crc = ~crc;
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  crc = hw ? crc32c_hw(data.data(), data.size(), crc) : crc32c_sw(data.data(), data.size(), crc);
#else
  crc = crc32c_sw(data.data(), data.size(), crc);
#endif
  return ~crc;
}

Writer::Writer(std::string_view kind) : kind_(kind) {
  if (kind_.size() > 0xFFFF) throw std::invalid_argument("snapshot kind too long");
}

void Writer::put_bytes(std::span<const std::uint8_t> bytes) {
  append_raw(payload_, bytes.data(), bytes.size());
}

std::vector<std::uint8_t> Writer::finish() const {
  std::vector<std::uint8_t> out;
  out.reserve(8 + 2 + 2 + kind_.size() + 8 + payload_.size() + 4);
  append_raw(out, kMagic, 8);
  append_le<std::uint16_t>(out, kFormatVersion);
  append_le<std::uint16_t>(out, static_cast<std::uint16_t>(kind_.size()));
  append_raw(out, kind_.data(), kind_.size());
  append_le<std::uint64_t>(out, payload_.size());
  append_raw(out, payload_.data(), payload_.size());
  append_le<std::uint32_t>(out, crc32c(out));
  return out;
}

Reader::Reader(std::span<const std::uint8_t> image, std::string_view expected_kind) {
  constexpr std::size_t kFixed = 8 + 2 + 2 + 8 + 4;
  if (image.size() < kFixed) {
    throw SnapshotError("snapshot truncated: " + std::to_string(image.size()) + " bytes is shorter than any header");
  }
  if (std::memcmp(image.data(), kMagic, 8) != 0) throw SnapshotError("not a vnfkit snapshot (bad magic)");
  std::uint16_t version, kind_len;
  std::memcpy(&version, image.data() + 8, 2);
  std::memcpy(&kind_len, image.data() + 10, 2);
  if (version != kFormatVersion) {
    throw SnapshotError("snapshot format version " + std::to_string(version) + " is not supported (expected " +
                        std::to_string(kFormatVersion) + ")");
  }
  if (image.size() < kFixed + kind_len) throw SnapshotError("snapshot truncated inside its header");
  const std::string_view kind(reinterpret_cast<const char*>(image.data() + 12), kind_len);
  std::uint64_t payload_len;
  std::memcpy(&payload_len, image.data() + 12 + kind_len, 8);
  const std::size_t header = 12 + kind_len + 8;
  if (payload_len > image.size() - header - 4 || header + payload_len + 4 != image.size()) {
    throw SnapshotError("snapshot truncated or padded: header says " + std::to_string(payload_len) +
                        " payload bytes, image has " + std::to_string(image.size() - header - 4));
  }
  std::uint32_t stored;
  std::memcpy(&stored, image.data() + header + payload_len, 4);
  const auto actual = crc32c(image.first(header + payload_len));
  if (stored != actual) throw SnapshotError("snapshot checksum mismatch (corrupted image)");
  if (kind != expected_kind) {
    throw SnapshotError("snapshot is of kind '" + std::string(kind) + "', expected '" + std::string(expected_kind) + "'");
  }
  payload_ = image.subspan(header, payload_len);
}

std::span<const std::uint8_t> Reader::take(std::size_t n) {
  if (n > remaining()) throw SnapshotError("snapshot payload ends early (corrupted or wrong version)");
  auto s = payload_.subspan(pos_, n);
  pos_ += n;
  return s;
}

void Reader::expect_end() const {
  if (remaining() != 0) throw SnapshotError("snapshot payload has " + std::to_string(remaining()) + " unexpected trailing bytes");
}

}  // namespace vnfkit::snapshot
