// RangeTable: validation leaves the table unchanged, split/merge semantics, lookups, snapshots.
#include "vnfkit/flow/range_table.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "vnfkit/snapshot/snapshot.hpp"

using vnfkit::flow::kNoTarget;
using vnfkit::flow::Range;
using vnfkit::flow::RangeTable;

namespace {
std::uint32_t ref_find(const std::vector<Range>& rs, std::uint32_t id) {
  for (const auto& r : rs) {
    if (r.lo <= id && id <= r.hi) return r.target;
  }
  return kNoTarget;
}
bool same(const std::vector<Range>& a, const std::vector<Range>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].lo != b[i].lo || a[i].hi != b[i].hi || a[i].target != b[i].target) return false;
  }
  return true;
}
}  // namespace

TEST(RangeTable, RejectsInvalidInputAndStaysUnchanged) {
  RangeTable t(std::vector<Range>{{0, 99, 1}});
  const std::vector<std::vector<Range>> bad = {
      {{0, 10, 1}, {10, 20, 2}}, {{20, 30, 1}, {0, 10, 2}}, {{5, 4, 1}}, {{0, 1, kNoTarget}}};
  for (const auto& b : bad) {
    EXPECT_THROW(t.assign(b), std::invalid_argument);
    EXPECT_TRUE(same(t.ranges(), {{0, 99, 1}}));
  }
}

TEST(RangeTable, SplitAndMerge) {
  RangeTable t(std::vector<Range>{{0, 0xFFFFFFFFu, 0}});
  EXPECT_EQ(t.split(0x80000000u, 1), 1u);
  EXPECT_EQ(t.find(0x7FFFFFFFu), 0u);
  EXPECT_EQ(t.find(0x80000000u), 1u);
  EXPECT_EQ(t.find(0xFFFFFFFFu), 1u);
  EXPECT_THROW(t.split(0x80000000u, 2), std::invalid_argument);  // [X, M) would be empty
  EXPECT_THROW(t.merge(5), std::invalid_argument);
  EXPECT_EQ(t.merge(0x80000000u), 0u);
  EXPECT_TRUE(same(t.ranges(), {{0, 0xFFFFFFFFu, 0}}));
}

TEST(RangeTable, RandomLookupsMatchLinearScan) {
  std::mt19937 gen(7);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  for (int round = 0; round < 50; ++round) {
    std::vector<Range> rs;
    std::uint32_t lo = rng() % 1000;
    for (int i = 0; i < static_cast<int>(rng() % 40); ++i) {
      const std::uint32_t hi = lo + rng() % 1000;
      rs.push_back({lo, hi, static_cast<std::uint32_t>(i)});
      lo = hi + 1 + rng() % 3;
    }
    RangeTable t(rs);
    std::vector<std::uint32_t> ids(500), out(500);
    for (auto& x : ids) x = rng() % (lo + 10);
    t.lookup(ids.data(), ids.size(), out.data());
    for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(out[i], ref_find(rs, ids[i]));
  }
}

TEST(RangeTable, SnapshotRoundTripAndCorruption) {
  RangeTable t(std::vector<Range>{{0, 9, 1}, {20, 29, 2}});
  auto img = t.snapshot();
  EXPECT_TRUE(same(RangeTable::restore(img).ranges(), t.ranges()));
  img[img.size() / 2] ^= 1;
  EXPECT_THROW(RangeTable::restore(img), vnfkit::snapshot::SnapshotError);
}
