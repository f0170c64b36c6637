#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
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

TEST(DeterminantLog, DetRecordFramesEachWorkersChunk) {
  std::vector<Determinant> recs{Determinant{5, 1, Op::kCounterAdd, 0, 2, 3}, Determinant{6, 1, Op::kClock, 0, 0, 9}};
  const std::vector<std::vector<std::uint8_t>> chunks{encode_chunk(0, 40, recs), {}, encode_chunk(2, 7, {recs.data(), 1})};
  const auto rec = encode_det_record(0x0102030405060708ull, chunks);
  ASSERT_EQ(rec.size(), kDetRecordHeaderSize + 3 * kDetRecordPartSize + chunks[0].size() + chunks[2].size());
  EXPECT_EQ(std::string(rec.begin(), rec.begin() + 4), "VKDR");
  std::uint64_t seq = 0;
  std::uint32_t n = 0;
  std::memcpy(&seq, rec.data() + 4, 8);
  std::memcpy(&n, rec.data() + 12, 4);
  EXPECT_EQ(seq, 0x0102030405060708ull);
  EXPECT_EQ(n, 3u);
  std::size_t at = kDetRecordHeaderSize;
  for (std::uint32_t q = 0; q < 3; ++q) {
    std::uint32_t idx = 0, len = 0;
    std::memcpy(&idx, rec.data() + at, 4);
    std::memcpy(&len, rec.data() + at + 4, 4);
    at += kDetRecordPartSize;
    EXPECT_EQ(idx, q);
    ASSERT_EQ(len, chunks[q].size());
    EXPECT_TRUE(std::equal(chunks[q].begin(), chunks[q].end(), rec.begin() + static_cast<std::ptrdiff_t>(at)));
    if (len) {
      EXPECT_EQ(parse_chunks({rec.data() + at, len}).at(0).records.size(), q == 0 ? 2u : 1u);
    }
    at += len;
  }
  EXPECT_EQ(at, rec.size());
  EXPECT_EQ(encode_det_record(3, {}).size(), kDetRecordHeaderSize);
}
