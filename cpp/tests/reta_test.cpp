#include "vnfkit/classify/reta.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

using vnfkit::classify::Reta;

TEST(Reta, RoundRobinFillAndLowBitSelection) {
  const Reta r(128, 3);
  EXPECT_EQ(r.size(), 128u);
  EXPECT_EQ(r.mask(), 127u);
  for (std::size_t i = 0; i < 128; ++i) EXPECT_EQ(r.get(i), i % 3);
  // The low 7 bits of the hash pick the entry.
  EXPECT_EQ(r.lookup(0xABCD0000u | 5u), 5u % 3);
  EXPECT_EQ(r.lookup(0xFFFFFF80u | 7u), 7u % 3);
}

TEST(Reta, UpdatesChangeLookups) {
  Reta r(4, 4);
  EXPECT_EQ(r.lookup(2), 2);
  r.set(2, 0);
  EXPECT_EQ(r.lookup(2), 0);
  EXPECT_EQ(r.lookup(6), 0);  // 6 & 3 == 2
  const std::vector<std::uint16_t> t = {3, 3, 3, 3};
  r.assign(t);
  for (std::uint32_t h = 0; h < 16; ++h) EXPECT_EQ(r.lookup(h), 3);
  r.fill_round_robin();
  std::vector<std::uint16_t> out(4);
  r.copy_to(out.data());
  EXPECT_EQ(out, (std::vector<std::uint16_t>{0, 1, 2, 3}));
}

TEST(Reta, RejectsBadConfigAndEntriesAtomically) {
  EXPECT_THROW(Reta(0, 1), std::invalid_argument);
  EXPECT_THROW(Reta(100, 1), std::invalid_argument);
  EXPECT_THROW(Reta(131072, 1), std::invalid_argument);
  EXPECT_THROW(Reta(128, 0), std::invalid_argument);
  EXPECT_THROW(Reta(128, 1025), std::invalid_argument);
  EXPECT_NO_THROW(Reta(1, 1));
  EXPECT_NO_THROW(Reta(65536, 1024));
  Reta r(4, 2);
  EXPECT_THROW(r.set(4, 0), std::invalid_argument);
  EXPECT_THROW(r.set(0, 2), std::invalid_argument);
  const std::vector<std::uint16_t> bad = {0, 1, 2, 0};
  EXPECT_THROW(r.assign(bad), std::invalid_argument);
  EXPECT_EQ(r.get(2), 0);  // unchanged by the failed assign
  const std::vector<std::uint16_t> wrong_len = {0, 1};
  EXPECT_THROW(r.assign(wrong_len), std::invalid_argument);
  EXPECT_THROW((void)r.get(4), std::out_of_range);
}
