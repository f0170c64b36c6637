// FlowTable: stable slots, full-table behaviour, FIN/RST and idle expiry in deterministic order,
// range queries, snapshot round trip (identical future behaviour) and corruption.
#include "vnfkit/flow/flow_table.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "vnfkit/snapshot/snapshot.hpp"

using namespace vnfkit::flow;

namespace {
FlowKey key(std::uint32_t i, std::uint8_t proto = 6) {
  return make_v4_key(0x0A000000u + i, 0x0B000001u, static_cast<std::uint16_t>(i), 80, proto);
}
FlowTableConfig cfg(std::uint32_t cap, std::uint64_t idle = kNever, std::uint64_t close = kNever) {
  FlowTableConfig c;
  c.capacity = cap;
  c.value_size = 16;
  c.idle_timeout_ns = idle;
  c.close_timeout_ns = close;
  return c;
}
struct Batch {
  std::vector<FlowKey> keys;
  std::vector<std::uint32_t> ids;
  std::vector<std::uint64_t> ts;
  std::vector<std::uint8_t> flags;
  std::vector<std::uint32_t> slots;
  std::vector<std::uint8_t> fresh;
  std::size_t run(FlowTable& t) {
    slots.resize(keys.size());
    fresh.resize(keys.size());
    ids.resize(keys.size());
    ts.resize(keys.size());
    flags.resize(keys.size());
    return t.lookup_or_insert(keys.data(), ids.data(), ts.data(), flags.data(), keys.size(), slots.data(),
                              fresh.data());
  }
};
}  // namespace

TEST(FlowTable, RejectsBadConfig) {
  EXPECT_THROW(FlowTable(cfg(0)), std::invalid_argument);
  auto c = cfg(4);
  c.value_size = 0;
  EXPECT_THROW(FlowTable{c}, std::invalid_argument);
  EXPECT_THROW(FlowTable(cfg(4, 0)), std::invalid_argument);
}

TEST(FlowTable, SlotsAreStableAndFullTableFails) {
  FlowTable t(cfg(3));
  Batch b;
  for (std::uint32_t i = 0; i < 5; ++i) b.keys.push_back(key(i));
  b.keys.push_back(key(1));  // duplicate within the batch: inserted once
  EXPECT_EQ(b.run(t), 3u);
  EXPECT_EQ(b.slots, (std::vector<std::uint32_t>{0, 1, 2, kNoSlot, kNoSlot, 1}));
  EXPECT_EQ(b.fresh, (std::vector<std::uint8_t>{1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(t.stats().failed_inserts, 2u);
  std::memset(t.values() + 16, 0xAB, 16);
  EXPECT_EQ(b.run(t), 0u);
  EXPECT_EQ(b.slots[1], 1u);
  EXPECT_EQ(t.values()[16], 0xAB);
}

TEST(FlowTable, ExpiryIdleAndTcpCloseInDeadlineOrder) {
  FlowTable t(cfg(16, 1000, 10));
  Batch b;
  b.keys = {key(1), key(2), key(3, 17), key(4)};
  b.ts = {0, 5, 5, 7};
  b.flags = {0, kTcpFin, kTcpFin, kTcpRst};  // UDP "FIN" bits are ignored
  b.run(t);
  Expired e;
  EXPECT_EQ(t.expire(14, e), 0u);
  EXPECT_EQ(t.expire(17, e), 2u);
  EXPECT_EQ(e.slots, (std::vector<std::uint32_t>{1, 3}));
  EXPECT_EQ(e.deadlines, (std::vector<std::uint64_t>{15, 17}));
  EXPECT_EQ(e.reasons[0], static_cast<std::uint8_t>(ExpireReason::kClosed));
  EXPECT_EQ(t.expire(1005, e), 2u);
  EXPECT_EQ(e.slots, (std::vector<std::uint32_t>{0, 2}));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.stats().expired_closed, 2u);
  EXPECT_EQ(t.stats().expired_idle, 2u);
}

TEST(FlowTable, ActiveInRange) {
  FlowTable t(cfg(16));
  Batch b;
  for (std::uint32_t i = 0; i < 10; ++i) {
    b.keys.push_back(key(i));
    b.ids.push_back(i * 10);
    b.ts.push_back(i);
  }
  b.run(t);
  EXPECT_EQ(t.active_in_range(20, 50), (std::vector<std::uint32_t>{2, 3, 4, 5}));
  EXPECT_EQ(t.active_in_range(20, 50, 4), (std::vector<std::uint32_t>{4, 5}));
}

TEST(FlowTable, RandomOpsSnapshotRestoreBehavesIdentically) {
  std::mt19937 gen(11);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  FlowTable t(cfg(200, 500, 50));
  std::uint64_t now = 0;
  Expired e;
  for (int step = 0; step < 200; ++step) {
    Batch b;
    for (int i = 0; i < 20; ++i) {
      b.keys.push_back(key(rng() % 400));
      b.ts.push_back(now + rng() % 100);
      b.flags.push_back(rng() % 10 == 0 ? kTcpFin : 0);
    }
    b.run(t);
    if (step % 7 == 0) b.keys.resize(3), t.remove(b.keys.data(), 3, nullptr);
    now += 30;
    t.expire(now, e);
  }
  auto img = t.snapshot();
  FlowTable r = FlowTable::restore(img);
  EXPECT_EQ(r.snapshot(), img);
  for (int step = 0; step < 50; ++step) {
    Batch a, c;
    for (int i = 0; i < 20; ++i) {
      a.keys.push_back(key(rng() % 400));
      a.ts.push_back(now + rng() % 100);
    }
    c = a;
    a.run(t);
    c.run(r);
    EXPECT_EQ(a.slots, c.slots);
    now += 40;
    Expired e1, e2;
    t.expire(now, e1);
    r.expire(now, e2);
    EXPECT_EQ(e1.slots, e2.slots);
    EXPECT_EQ(e1.deadlines, e2.deadlines);
  }
  img[img.size() - 10] ^= 4;
  EXPECT_THROW(FlowTable::restore(img), vnfkit::snapshot::SnapshotError);
  img.resize(40);
  EXPECT_THROW(FlowTable::restore(img), vnfkit::snapshot::SnapshotError);
}

// The *_rows calls behave exactly like the plain calls on the gathered rows (two tables fed the
// same random operations stay identical), reject out-of-range rows before touching anything, and
// pick flow_ids / ts_ns / tcp_flags from the same rows as the keys.
TEST(FlowTable, RowsCallsEqualGatheredCalls) {
  FlowTable a(cfg(64, 1000, 100));
  FlowTable b(cfg(64, 1000, 100));
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    const std::size_t m = 1 + rng() % 40;
    std::vector<FlowKey> keys(m);
    std::vector<std::uint32_t> ids(m);
    std::vector<std::uint64_t> ts(m);
    std::vector<std::uint8_t> fl(m);
    for (std::size_t i = 0; i < m; ++i) {
      keys[i] = key(static_cast<std::uint32_t>(rng() % 100), (rng() & 1) ? 6 : 17);
      ids[i] = static_cast<std::uint32_t>(rng());
      ts[i] = static_cast<std::uint64_t>(round) * 10 + rng() % 10;
      fl[i] = static_cast<std::uint8_t>(rng() % 8);
    }
    const std::size_t n = rng() % 50;  // rows may repeat
    std::vector<std::uint32_t> rows(n);
    for (auto& r : rows) r = static_cast<std::uint32_t>(rng() % m);
    std::vector<FlowKey> gk(n);
    std::vector<std::uint32_t> gi(n);
    std::vector<std::uint64_t> gt(n);
    std::vector<std::uint8_t> gf(n);
    for (std::size_t j = 0; j < n; ++j) {
      gk[j] = keys[rows[j]];
      gi[j] = ids[rows[j]];
      gt[j] = ts[rows[j]];
      gf[j] = fl[rows[j]];
    }
    std::vector<std::uint32_t> sa(n), sb(n), la(n), lb(n);
    std::vector<std::uint8_t> na(n), nb(n);
    if (rng() % 3 == 0) {
      a.lookup(gk.data(), n, la.data());
      b.lookup_rows(keys.data(), m, rows.data(), n, lb.data());
      ASSERT_EQ(la, lb);
    } else {
      const std::size_t ia = a.lookup_or_insert(gk.data(), gi.data(), gt.data(), gf.data(), n, sa.data(), na.data());
      const std::size_t ib =
          b.lookup_or_insert_rows(keys.data(), ids.data(), ts.data(), fl.data(), m, rows.data(), n, sb.data(), nb.data());
      ASSERT_EQ(ia, ib);
      ASSERT_EQ(sa, sb);
      ASSERT_EQ(na, nb);
    }
    if (round % 20 == 19) {
      Expired ea, eb;
      a.expire(static_cast<std::uint64_t>(round) * 10, ea);
      b.expire(static_cast<std::uint64_t>(round) * 10, eb);
      ASSERT_EQ(ea.slots, eb.slots);
    }
  }
  EXPECT_EQ(a.snapshot(), b.snapshot());
}

TEST(FlowTable, RowsCallsRejectOutOfRangeRows) {
  FlowTable t(cfg(8));
  const FlowKey keys[2] = {key(1), key(2)};
  const std::uint32_t ids[2] = {0, 0};
  const std::uint64_t ts[2] = {0, 0};
  const std::uint32_t rows[2] = {0, 2};
  std::uint32_t slots[2] = {};
  std::uint8_t fresh[2] = {};
  EXPECT_THROW(t.lookup_rows(keys, 2, rows, 2, slots), std::invalid_argument);
  EXPECT_THROW(t.lookup_or_insert_rows(keys, ids, ts, nullptr, 2, rows, 2, slots, fresh), std::invalid_argument);
  EXPECT_EQ(t.size(), 0u);  // nothing inserted before the throw
  EXPECT_EQ(t.stats().lookups, 0u);
  EXPECT_EQ(t.lookup_or_insert_rows(keys, ids, ts, nullptr, 2, rows, 1, slots, fresh), 1u);
  EXPECT_EQ(t.lookup_or_insert_rows(keys, ids, ts, nullptr, 2, nullptr, 0, slots, fresh), 0u);
}
