// ExceptionTable: capacity is a hard limit (fails, counted, never evicts); unbounded tables grow;
// removal keeps the dense arrays and index consistent; snapshots; steer precedence.
#include "vnfkit/flow/exception_table.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "vnfkit/snapshot/snapshot.hpp"

using namespace vnfkit::flow;

namespace {
FlowKey key(std::uint32_t i) { return make_v4_key(0x0A000000u + i, 0x0B000001u, static_cast<std::uint16_t>(i), 80, 6); }
}  // namespace

TEST(ExceptionTable, HardCapacityFailsVisibly) {
  ExceptionTable t(2048);
  for (std::uint32_t i = 0; i < 2048; ++i) ASSERT_TRUE(t.insert(key(i), i));
  EXPECT_FALSE(t.insert(key(5000), 1));
  EXPECT_EQ(t.stats().failed_inserts, 1u);
  EXPECT_TRUE(t.insert(key(7), 99));  // re-target fits
  EXPECT_EQ(t.find(key(7)), 99u);
  EXPECT_EQ(t.find(key(5000)), kNoTarget);
  EXPECT_EQ(t.size(), 2048u);
  EXPECT_THROW(t.insert(key(1), kNoTarget), std::invalid_argument);
}

TEST(ExceptionTable, RandomOpsMatchMap) {
  std::mt19937 gen(3);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  ExceptionTable t;  // unbounded: grows past its initial 1024
  std::map<std::uint32_t, std::uint32_t> ref;
  for (int step = 0; step < 20000; ++step) {
    const std::uint32_t k = rng() % 3000;
    if (rng() % 3) {
      const std::uint32_t v = rng() % 100;
      ASSERT_TRUE(t.insert(key(k), v));
      ref[k] = v;
    } else {
      EXPECT_EQ(t.erase(key(k)), ref.erase(k) == 1);
    }
  }
  EXPECT_EQ(t.size(), ref.size());
  std::vector<FlowKey> ks(3000);
  std::vector<std::uint32_t> out(3000);
  for (std::uint32_t i = 0; i < 3000; ++i) ks[i] = key(i);
  t.lookup(ks.data(), ks.size(), out.data());
  for (std::uint32_t i = 0; i < 3000; ++i) {
    auto it = ref.find(i);
    EXPECT_EQ(out[i], it == ref.end() ? kNoTarget : it->second);
  }
  auto r = ExceptionTable::restore(t.snapshot());
  EXPECT_EQ(r.size(), t.size());
  for (std::uint32_t i = 0; i < 3000; ++i) EXPECT_EQ(r.find(ks[i]), t.find(ks[i]));
}

TEST(ExceptionTable, SnapshotCorruptionAndWrongKind) {
  ExceptionTable t(4);
  t.insert(key(1), 1);
  auto img = t.snapshot();
  auto bad = img;
  bad[20] ^= 0xFF;
  EXPECT_THROW(ExceptionTable::restore(bad), vnfkit::snapshot::SnapshotError);
  img.resize(img.size() - 2);
  EXPECT_THROW(ExceptionTable::restore(img), vnfkit::snapshot::SnapshotError);
  EXPECT_THROW(ExceptionTable::restore(RangeTable().snapshot()), vnfkit::snapshot::SnapshotError);
}

TEST(ExceptionTable, SteerPrefersExceptionsInOrder) {
  ExceptionTable hw(2048), sw;
  hw.insert(key(1), 10);
  sw.insert(key(1), 20);
  sw.insert(key(2), 21);
  RangeTable rt(std::vector<Range>{{0, 99, 5}});
  const FlowKey ks[4] = {key(0), key(1), key(2), key(3)};
  const std::uint32_t ids[4] = {1, 1, 1, 500};
  std::uint32_t out[4];
  const ExceptionTable* tabs[2] = {&hw, &sw};
  steer(tabs, rt, ks, ids, 4, out);
  EXPECT_EQ(out[0], 5u);
  EXPECT_EQ(out[1], 10u);
  EXPECT_EQ(out[2], 21u);
  EXPECT_EQ(out[3], kNoTarget);
}
