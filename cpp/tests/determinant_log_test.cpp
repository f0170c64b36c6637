#include <gtest/gtest.h>

#include <vector>

#include "vnfkit/ftlog/log.hpp"

using namespace vnfkit::ftlog;

TEST(DeterminantLog, AppendDrainPositionsAndChunkRoundTrip) {
  DeterminantLog log(4);
  for (int b = 0; b < 3; ++b) {
    Determinant* r = log.reserve(10);
    EXPECT_EQ(log.reserved_end(), static_cast<std::uint64_t>(b * 10 + 10));
    for (int i = 0; i < 10; ++i) r[i] = Determinant{static_cast<std::uint64_t>(b * 10 + i), 1, Op::kCounterAdd, 0, 2, 3};
    log.commit(10);
  }
  EXPECT_EQ(log.position(), 30u);
  auto c1 = log.drain_chunk(7);
  EXPECT_EQ(log.held(), 0u);
  Determinant* r = log.reserve(1);
  r[0] = Determinant{99, 2, Op::kClock, 0, 0, 123};
  log.commit(1);
  auto c2 = log.drain_chunk(7);
  std::vector<std::uint8_t> both(c1);
  both.resize(c1.size() + c2.size());
  std::copy(c2.begin(), c2.end(), both.begin() + static_cast<std::ptrdiff_t>(c1.size()));
  auto chunks = parse_chunks(both);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].thread, 7);
  EXPECT_EQ(chunks[0].records.size(), 30u);
  EXPECT_EQ(chunks[1].first_position, 30u);
  EXPECT_EQ(chunks[1].records[0].value, 123u);
  EXPECT_EQ(c1.size(), kChunkHeaderSize + 30 * sizeof(Determinant) + kChunkTrailerSize);
}

TEST(DeterminantLog, DamageIsDetected) {
  std::vector<Determinant> recs(5, Determinant{1, 2, Op::kRandom, 0, 0, 9});
  auto c = encode_chunk(0, 0, recs);
  auto flipped = c;
  flipped[30] ^= 0x40;
  EXPECT_THROW(parse_chunks(flipped), LogFormatError);
  auto cut = std::vector<std::uint8_t>(c.begin(), c.end() - 3);
  EXPECT_THROW(parse_chunks(cut), LogFormatError);
  auto magic = c;
  magic[0] = 'X';
  EXPECT_THROW(parse_chunks(magic), DivergenceError);
  EXPECT_NO_THROW(parse_chunks(c));
}
