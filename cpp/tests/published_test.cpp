// Published<T>: readers on real threads look up while a writer updates; every lookup batch must
// equal the result of one whole version (never a mix), old versions stay valid while held, a
// throwing update publishes nothing. Run under ASan+UBSan too (the asan preset), which catches a
// reader touching a freed version.
#include "vnfkit/flow/published.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "vnfkit/flow/exception_table.hpp"
#include "vnfkit/flow/range_table.hpp"

using namespace vnfkit::flow;

namespace {
FlowKey key(std::uint32_t i) { return make_v4_key(0x0A000000u + i, 0x0B000001u, static_cast<std::uint16_t>(i), 80, 6); }
constexpr std::uint32_t kKeys = 4096;
}  // namespace

TEST(Published, ExceptionTableReadersSeeOneWholeVersion) {
  Published<ExceptionTable> pub{ExceptionTable(0)};
  std::vector<FlowKey> keys(kKeys);
  for (std::uint32_t i = 0; i < kKeys; ++i) keys[i] = key(i);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> mixed{0}, batches{0};
  auto reader = [&] {
    std::vector<std::uint32_t> out(kKeys);
    while (!stop.load(std::memory_order_relaxed)) {
      const auto v = pub.load();
      v->lookup(keys.data(), kKeys, out.data());
      // every version maps either no key or every key, all to one target
      bool ok = true;
      for (std::uint32_t i = 1; i < kKeys; ++i) ok &= out[i] == out[0];
      if (!ok) mixed.fetch_add(1);
      batches.fetch_add(1);
    }
  };
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) readers.emplace_back(reader);
  std::vector<std::uint32_t> targets(kKeys);
  for (std::uint32_t round = 0; round < 200; ++round) {
    if (round % 3 == 2) {
      pub.update([](ExceptionTable& t) { t.clear(); });
    } else {
      for (auto& t : targets) t = round;
      pub.update([&](ExceptionTable& t) { t.insert(keys.data(), targets.data(), kKeys, nullptr); });
    }
  }
  while (batches.load() < 50) std::this_thread::yield();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(mixed.load(), 0u);
  EXPECT_EQ(pub.version(), 200u);
}

TEST(Published, RangeTableSplitMergeUnderReaders) {
  Published<RangeTable> pub{RangeTable(std::vector<Range>{{0, 0xFFFFFFFFu, 0}})};
  std::vector<std::uint32_t> ids(kKeys);
  for (std::uint32_t i = 0; i < kKeys; ++i) ids[i] = i * 1048573u;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0};
  auto reader = [&] {
    std::vector<std::uint32_t> out(kKeys);
    while (!stop.load(std::memory_order_relaxed)) {
      const auto v = pub.load();
      v->lookup(ids.data(), kKeys, out.data());
      // versions: one range (all 0) or split at 2^31 (upper half 1)
      const bool split = v->size() == 2;
      for (std::uint32_t i = 0; i < kKeys; ++i) {
        const std::uint32_t want = (split && ids[i] >= 0x80000000u) ? 1 : 0;
        if (out[i] != want) bad.fetch_add(1);
      }
    }
  };
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) readers.emplace_back(reader);
  for (int round = 0; round < 500; ++round) {
    if (round % 2 == 0) {
      pub.update([](RangeTable& t) { return t.split(0x80000000u, 1); });
    } else {
      pub.update([](RangeTable& t) { return t.merge(0x80000000u); });
    }
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(pub.load()->size(), 1u);
}

TEST(Published, HeldVersionOutlivesUpdatesAndThrowingUpdatePublishesNothing) {
  Published<RangeTable> pub{RangeTable(std::vector<Range>{{0, 99, 7}})};
  const auto old = pub.load();
  pub.update([](RangeTable& t) { t.set_target(5, 8); });
  EXPECT_EQ(old->find(5), 7u);  // the held version is unchanged and alive
  EXPECT_EQ(pub.load()->find(5), 8u);
  EXPECT_THROW(pub.update([](RangeTable& t) { return t.split(500, 1); }), std::invalid_argument);
  EXPECT_EQ(pub.version(), 1u);
  EXPECT_EQ(pub.load()->find(5), 8u);
  pub.replace(RangeTable(std::vector<Range>{{0, 9, 3}}));
  EXPECT_EQ(pub.load()->find(5), 3u);
  EXPECT_EQ(pub.version(), 2u);
}
