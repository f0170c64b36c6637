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
