#include <gtest/gtest.h>

#include "vnfkit/snapshot/snapshot.hpp"

using namespace vnfkit::snapshot;

TEST(Crc32c, KnownVector) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}), 0xE3069283u);
}

TEST(Snapshot, RoundTripAndEveryCorruptionIsRejected) {
  Writer w("demo");
  w.put<std::uint32_t>(42);
  std::vector<std::uint16_t> xs{1, 2, 3};
  w.put_array<std::uint16_t>(xs);
  const auto img = w.finish();
  {
    Reader r(img, "demo");
    EXPECT_EQ(r.get<std::uint32_t>(), 42u);
    EXPECT_EQ(r.get_array<std::uint16_t>(), xs);
    EXPECT_NO_THROW(r.expect_end());
  }
  EXPECT_THROW(Reader(img, "other"), SnapshotError);
  for (std::size_t cut = 0; cut < img.size(); ++cut) {
    std::vector<std::uint8_t> t(img.begin(), img.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(Reader(t, "demo"), SnapshotError) << "truncated at " << cut;
  }
  for (std::size_t i = 0; i < img.size(); ++i) {
    auto bad = img;
    bad[i] ^= 0x40;
    EXPECT_THROW(Reader(bad, "demo"), SnapshotError) << "flipped byte " << i;
  }
}

// A bit-at-a-time CRC32C (Castagnoli, reflected) to check the fast paths against, long inputs
// included (they run as interleaved lanes joined by a shift table).
static std::uint32_t crc32c_bitwise(const std::uint8_t* p, std::size_t n, std::uint32_t crc) {
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

TEST(Snapshot, Crc32cMatchesTheBitwiseDefinitionAtEveryLengthAroundItsLanes) {
  std::vector<std::uint8_t> data(3 * 3 * 4096 + 977);
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& b : data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<std::uint8_t>(x);
  }
  for (std::size_t n : {0ul, 1ul, 7ul, 8ul, 4095ul, 12287ul, 12288ul, 12289ul, 12295ul, 24576ul, 24583ul, 36864ul,
                        data.size()}) {
    for (std::size_t off : {0ul, 3ul}) {
      if (off + n > data.size()) continue;
      const std::span<const std::uint8_t> s(data.data() + off, n);
      EXPECT_EQ(crc32c(s), crc32c_bitwise(s.data(), n, 0)) << n << " bytes at " << off;
      EXPECT_EQ(crc32c(s, 0x12345678u), crc32c_bitwise(s.data(), n, 0x12345678u)) << n << " bytes, seeded";
    }
  }
}
