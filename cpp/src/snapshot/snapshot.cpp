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
// The CRC register (no inversions) after `n` bytes from `p`, one 8-byte step at a time.
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_hw_run(const std::uint8_t* p, std::size_t n,
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

// Long inputs run as three interleaved streams of kLane bytes: each crc32 instruction has a
// latency of three cycles and a throughput of one, so one dependency chain uses a third of the
// unit. The register is linear over GF(2): reg(A || B) = shift(reg(A), |B|) ^ reg_from_0(B), where
// shift() feeds |B| zero bytes, a linear map on 32 bits kept as four 256-entry tables.
constexpr std::size_t kLane = 4096;

struct ShiftTables {
  std::uint32_t t[4][256];
};

__attribute__((target("sse4.2"))) const ShiftTables& lane_shift() noexcept {
  static const ShiftTables tables = [] {
    ShiftTables s{};
    static const std::uint8_t zeros[kLane] = {};
    for (int k = 0; k < 4; ++k) {
      for (std::uint32_t b = 0; b < 256; ++b) s.t[k][b] = crc32c_hw_run(zeros, kLane, b << (8 * k));
    }
    return s;
  }();
  return tables;
}

inline std::uint32_t shift_lane(const ShiftTables& s, std::uint32_t crc) noexcept {
  return s.t[0][crc & 0xFFu] ^ s.t[1][(crc >> 8) & 0xFFu] ^ s.t[2][(crc >> 16) & 0xFFu] ^ s.t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) std::uint32_t crc32c_hw(const std::uint8_t* p, std::size_t n,
                                                          std::uint32_t crc) noexcept {
  if (n >= 3 * kLane) {
    const ShiftTables& s = lane_shift();
    std::uint64_t a = crc;
    while (n >= 3 * kLane) {
      std::uint64_t b = 0, c = 0;
      for (std::size_t i = 0; i < kLane; i += 8) {
        std::uint64_t va, vb, vc;
        std::memcpy(&va, p + i, 8);
        std::memcpy(&vb, p + kLane + i, 8);
        std::memcpy(&vc, p + 2 * kLane + i, 8);
        a = _mm_crc32_u64(a, va);
        b = _mm_crc32_u64(b, vb);
        c = _mm_crc32_u64(c, vc);
      }
      const auto ab = shift_lane(s, static_cast<std::uint32_t>(a)) ^ static_cast<std::uint32_t>(b);
      a = shift_lane(s, ab) ^ static_cast<std::uint32_t>(c);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
    crc = static_cast<std::uint32_t>(a);
  }
  return crc32c_hw_run(p, n, crc);
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

Writer::Writer(std::string_view kind) {
  if (kind.size() > 0xFFFF) throw std::invalid_argument("snapshot kind too long");
  append_raw(buf_, kMagic, 8);
  append_le<std::uint16_t>(buf_, kFormatVersion);
  append_le<std::uint16_t>(buf_, static_cast<std::uint16_t>(kind.size()));
  append_raw(buf_, kind.data(), kind.size());
  append_le<std::uint64_t>(buf_, 0);  // the payload's length, patched by finish()
  payload_at_ = buf_.size();
}

std::uint8_t* Writer::grow(std::size_t n) {
  if (finished_) throw std::logic_error("snapshot writer: put after finish");
  const std::size_t at = buf_.size();
  buf_.resize(at + n);
  return buf_.data() + at;
}

void Writer::put_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return;
  std::memcpy(grow(bytes.size()), bytes.data(), bytes.size());
}

std::vector<std::uint8_t> Writer::finish() {
  if (finished_) throw std::logic_error("snapshot writer: finished twice");
  finished_ = true;
  const std::uint64_t n = buf_.size() - payload_at_;
  std::memcpy(buf_.data() + payload_at_ - sizeof n, &n, sizeof n);
  append_le<std::uint32_t>(buf_, crc32c(buf_));
  return std::move(buf_);
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
