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

namespace {
// tcp 1000 (closes into tcp_closing 10), udp 100, icmp 50; protocols 6/17/1 pick their class.
FlowTableConfig classes_cfg(std::uint32_t cap) {
  FlowTableConfig c = cfg(cap);
  c.classes = {TimeoutClass{1000, 1}, TimeoutClass{10, kSameClass}, TimeoutClass{100, kSameClass},
               TimeoutClass{50, kSameClass}};
  c.class_of_proto[6] = 0;
  c.class_of_proto[17] = 2;
  c.class_of_proto[1] = 3;
  return c;
}
}  // namespace

TEST(FlowTable, TimeoutClassesByProtocolFinMovesAndExplicitClass) {
  FlowTable t(classes_cfg(16));
  Batch b;
  b.keys = {key(1), key(2, 17), key(3, 1), key(4), key(5, 17)};
  b.ts = {0, 0, 0, 0, 0};
  b.run(t);
  EXPECT_EQ(t.deadline(b.slots[0]), 1000u);
  EXPECT_EQ(t.deadline(b.slots[1]), 100u);
  EXPECT_EQ(t.deadline(b.slots[2]), 50u);
  // a FIN on flow 4 at t=5 moves it to tcp_closing: deadline 15, re-armed earlier
  Batch f;
  f.keys = {key(4)};
  f.ts = {5};
  f.flags = {kTcpFin};
  f.run(t);
  EXPECT_EQ(t.entries()[f.slots[0]].tclass, 1u);
  EXPECT_EQ(t.deadline(f.slots[0]), 15u);
  // explicit class at insert: a UDP flow in the icmp class
  std::vector<FlowKey> k = {key(9, 17)};
  std::vector<std::uint32_t> ids = {0}, slots(1);
  std::vector<std::uint64_t> ts = {0};
  std::vector<std::uint8_t> cls = {3}, fresh(1), stale(1);
  t.lookup_or_insert(k.data(), ids.data(), ts.data(), nullptr, 1, slots.data(), fresh.data(), cls.data(), stale.data());
  EXPECT_EQ(t.deadline(slots[0]), 50u);
  cls[0] = 4;  // no such class: rejected before anything changes
  EXPECT_THROW(t.lookup_or_insert(k.data(), ids.data(), ts.data(), nullptr, 1, slots.data(), fresh.data(), cls.data(),
                                  nullptr),
               std::invalid_argument);
  // set_class moves flow 5 (udp) to tcp: deadline 1000
  const std::uint32_t s5 = b.slots[4];
  t.set_class(&s5, 1, 0);
  EXPECT_EQ(t.deadline(s5), 1000u);
  Expired e;
  EXPECT_EQ(t.expire(60, e), 3u);  // icmp (50), closing tcp (15), explicit-icmp udp (50)
  EXPECT_EQ(e.deadlines, (std::vector<std::uint64_t>{15, 50, 50}));
  EXPECT_EQ(e.reasons[0], static_cast<std::uint8_t>(ExpireReason::kClosed));
  EXPECT_EQ(t.expire(100, e), 1u);  // udp flow 2
  EXPECT_EQ(t.expire(999, e), 0u);
  EXPECT_EQ(t.expire(1000, e), 2u);  // tcp flow 1 and the moved flow 5
}

TEST(FlowTable, StaleTouchesAndTouchBySlot) {
  FlowTable t(classes_cfg(16));
  Batch b;
  b.keys = {key(1, 17), key(2, 17)};
  b.ts = {0, 0};
  b.run(t);
  // flow 1's second touch at t=100 (= its deadline) is stale, the third (same call) is not
  std::vector<std::uint32_t> slots = {b.slots[0], b.slots[0], b.slots[1]};
  std::vector<std::uint64_t> ts = {100, 101, 99};
  std::vector<std::uint8_t> stale(3);
  EXPECT_EQ(t.touch(slots.data(), 3, ts.data(), nullptr, nullptr, 3, stale.data()), 1u);
  EXPECT_EQ(stale, (std::vector<std::uint8_t>{1, 0, 0}));
  EXPECT_EQ(t.deadline(b.slots[0]), 201u);
  EXPECT_EQ(t.deadline(b.slots[1]), 199u);
  // lookup_or_insert reports stale the same way
  Batch c;
  c.keys = {key(2, 17)};
  c.ts = {199};
  std::vector<std::uint8_t> st(1);
  c.slots.resize(1);
  c.fresh.resize(1);
  c.ids.resize(1);
  c.flags.resize(1);
  t.lookup_or_insert(c.keys.data(), c.ids.data(), c.ts.data(), c.flags.data(), 1, c.slots.data(), c.fresh.data(),
                     nullptr, st.data());
  EXPECT_EQ(st[0], 1u);
  const std::uint32_t dead = 7;
  EXPECT_THROW(t.touch(&dead, 1, ts.data(), nullptr, nullptr, 3, nullptr), std::invalid_argument);
}

TEST(FlowTable, TimeoutClassesSurviveSnapshotAndLegacyImagesMigrate) {
  FlowTable t(classes_cfg(16));
  Batch b;
  b.keys = {key(1), key(2, 17), key(3)};
  b.ts = {0, 0, 0};
  b.flags = {0, 0, kTcpRst};
  b.run(t);
  FlowTable r = FlowTable::restore(t.snapshot());
  ASSERT_EQ(r.class_count(), 4u);
  for (auto s : b.slots) EXPECT_EQ(r.deadline(s), t.deadline(s));
  EXPECT_EQ(r.config().class_of_proto[17], 2u);
  // a table without explicit classes has the two legacy classes; closing flows are in class 1
  FlowTable l(cfg(8, 1000, 10));
  b.run(l);
  EXPECT_EQ(l.class_count(), 2u);
  EXPECT_EQ(l.entries()[b.slots[2]].tclass, 1u);
  EXPECT_EQ(l.deadline(b.slots[2]), 10u);
  EXPECT_EQ(l.deadline(b.slots[0]), 1000u);
}

TEST(FlowTable, RejectsBadTimeoutClasses) {
  auto c = classes_cfg(4);
  c.classes[0].on_close = 9;
  EXPECT_THROW(FlowTable{c}, std::invalid_argument);
  c = classes_cfg(4);
  c.class_of_proto[200] = 4;
  EXPECT_THROW(FlowTable{c}, std::invalid_argument);
  c = classes_cfg(4);
  c.classes[2].timeout_ns = 0;
  EXPECT_THROW(FlowTable{c}, std::invalid_argument);
  c = classes_cfg(4);
  c.classes.resize(kMaxTimeoutClasses + 1);
  EXPECT_THROW(FlowTable{c}, std::invalid_argument);
}

TEST(FlowTable, RestoresAnImageWrittenBeforeTimeoutClasses) {
  // the payload layout before classes: no trailing class section, closing flows only flagged
  vnfkit::snapshot::Writer w("flow_table");
  w.put<std::uint32_t>(4);      // capacity
  w.put<std::uint32_t>(16);     // value_size
  w.put<std::uint64_t>(1000);   // idle
  w.put<std::uint64_t>(10);     // close
  w.put<std::uint64_t>(4);      // tick
  w.put<std::uint64_t>(0);      // cursor tick
  w.put<std::uint64_t>(0);      // now
  w.put(FlowTableStats{});
  w.put_array<char>(std::span<const char>());
  const std::vector<std::uint32_t> free_list = {3, 2};
  w.put_array<std::uint32_t>(free_list);
  const std::vector<std::uint32_t> slots = {0, 1};
  w.put_array<std::uint32_t>(slots);
  std::vector<FlowEntry> es(2);
  es[0].key = key(1);
  es[0].state = FlowEntry::kLive;
  es[1].key = key(2);
  es[1].last_ts = 5;
  es[1].state = FlowEntry::kLive | FlowEntry::kClosing;
  w.put_array<FlowEntry>(es);
  const std::vector<std::uint8_t> vals(32, 7);
  w.put_array<std::uint8_t>(vals);
  FlowTable t = FlowTable::restore(w.finish());
  EXPECT_EQ(t.class_count(), 2u);
  EXPECT_EQ(t.entries()[1].tclass, 1u);
  EXPECT_EQ(t.deadline(0), 1000u);
  EXPECT_EQ(t.deadline(1), 15u);
  Expired e;
  EXPECT_EQ(t.expire(15, e), 1u);
  EXPECT_EQ(e.reasons[0], static_cast<std::uint8_t>(ExpireReason::kClosed));
}

// A full table with few buckets overflows them, so pure lookups take every probe outcome: the
// bucket's first signature match, a decision from the bucket alone, and the walk past it. Batches
// longer than the pipeline's depth, with hits, misses and repeats, must equal one-key lookups.
TEST(FlowTable, BatchedLookupsEqualSingleLookupsInOverflowingBuckets) {
  for (std::uint32_t cap : {30u, 61u, 1000u}) {
    FlowTable t(cfg(cap));
    std::vector<FlowKey> stored;
    for (std::uint32_t i = 0; i < cap; ++i) stored.push_back(key(i * 7919u));
    std::vector<std::uint32_t> ids(cap, 1);
    std::vector<std::uint64_t> ts(cap, 1);
    std::vector<std::uint32_t> slots(cap);
    ASSERT_EQ(t.lookup_or_insert(stored.data(), ids.data(), ts.data(), nullptr, cap, slots.data(), nullptr), cap);
    std::mt19937 rng(cap);
    std::vector<FlowKey> q;
    std::vector<std::uint32_t> want;
    for (int j = 0; j < 500; ++j) {
      const auto i = static_cast<std::uint32_t>(rng() % (2 * cap));
      q.push_back(i < cap ? stored[i] : key(1'000'000u + i));
      want.push_back(i < cap ? slots[i] : kNoSlot);
    }
    std::vector<std::uint32_t> got(q.size());
    t.lookup(q.data(), q.size(), got.data());
    EXPECT_EQ(got, want) << "capacity " << cap;
    for (std::size_t j = 0; j < q.size(); ++j) {
      std::uint32_t one = 0;
      t.lookup(&q[j], 1, &one);
      ASSERT_EQ(one, want[j]) << "capacity " << cap << " query " << j;
    }
  }
}

// Dirty tracking: an image seeded by snapshot() and fed every take_delta() snapshots to the live
// table's bytes after random inserts, FIN/RST, touches, removals, expiry and value writes of the
// slots handed out; a delta is proportional to the slots changed; a repeated delta is refused.
TEST(FlowTable, DeltaImageFollowsTheTable) {
  std::mt19937 gen(5);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  FlowTable t(cfg(300, 500, 50));
  FlowTableImage im(t.snapshot());
  t.clear_dirty();
  std::uint64_t now = 0;
  Expired e;
  for (int step = 0; step < 150; ++step) {
    Batch b;
    for (int i = 0; i < 15; ++i) {
      b.keys.push_back(key(rng() % 500, rng() % 3 ? 6 : 17));
      b.ts.push_back(now + rng() % 100);
      b.flags.push_back(rng() % 10 == 0 ? kTcpFin : 0);
    }
    b.run(t);
    for (auto s : b.slots) {
      if (s != kNoSlot) t.values()[std::size_t{s} * 16 + (rng() % 16)] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    }
    if (step % 5 == 0) {
      std::vector<std::uint32_t> live;
      for (std::uint32_t s = 0; s < 300; ++s) {
        if (t.live(s)) live.push_back(s);
      }
      if (!live.empty()) {
        const std::uint32_t s = live[rng() % live.size()];
        std::vector<std::uint64_t> ts{now + 200};
        std::vector<std::uint8_t> fl{kTcpRst};
        t.touch(&s, 1, ts.data(), fl.data(), nullptr, 1, nullptr);
        if (step % 3 == 0) t.remove_slot(live[rng() % live.size()]);
      }
    }
    if (step % 7 == 0) b.keys.resize(3), t.remove(b.keys.data(), 3, nullptr);
    now += 30;
    t.expire(now, e);
    if (step == 100) t.clear();
    auto d = t.take_delta();
    EXPECT_EQ(t.dirty_count(), 0u);
    im.apply(d);
    ASSERT_EQ(im.snapshot(), t.snapshot()) << "step " << step;
    if (step == 149) {
      EXPECT_THROW(im.apply(d), vnfkit::snapshot::SnapshotError);  // applied twice
    }
  }
  EXPECT_EQ(im.size(), t.size());
  const auto empty = t.take_delta();
  Batch one;
  one.keys.push_back(key(7));
  one.ts.push_back(now);
  one.flags.push_back(0);
  one.run(t);
  EXPECT_EQ(t.dirty_count(), 1u);
  EXPECT_EQ(t.take_delta().size(), empty.size() + 4 + sizeof(FlowEntry) + 16);  // slot, entry, value
}

// An image's own delta (take_delta of a FlowTableImage) stands for every table delta applied to it
// since its previous one: a second image fed only those, over spans of 1-6 table deltas with
// inserts, closes, removals, value writes, expiry and a clear() inside, snapshots to the table's
// bytes at every span's end; a span's delta applied twice, or one skipped, is refused; nothing
// applied, nothing to take.
TEST(FlowTable, ImageDeltaStandsForTheDeltasAppliedSinceTheLast) {
  std::mt19937 gen(11);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  FlowTable t(cfg(200, 400, 50));
  const auto base = t.snapshot();
  FlowTableImage near(base);  // fed every table delta
  FlowTableImage far(base);   // fed only near's deltas
  t.clear_dirty();
  EXPECT_THROW((void)near.take_delta(), std::logic_error);
  std::uint64_t now = 0;
  Expired e;
  std::vector<std::uint8_t> prev;
  std::uint32_t span = 1 + rng() % 6, in_span = 0, spans = 0;
  for (int step = 0; step < 240; ++step) {
    Batch b;
    for (int i = 0; i < 12; ++i) {
      b.keys.push_back(key(rng() % 400, rng() % 3 ? 6 : 17));
      b.ts.push_back(now + rng() % 100);
      b.flags.push_back(rng() % 9 == 0 ? kTcpFin : 0);
    }
    b.run(t);
    for (auto s : b.slots) {
      if (s != kNoSlot) t.values()[std::size_t{s} * 16 + (rng() % 16)] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    }
    if (step % 7 == 0) b.keys.resize(4), t.remove(b.keys.data(), 4, nullptr);
    now += 25;
    t.expire(now, e);
    if (step == 150) t.clear();
    near.apply(t.take_delta());
    if (++in_span < span) continue;
    EXPECT_EQ(near.pending_intervals(), span);
    auto d = near.take_delta();
    EXPECT_EQ(near.pending_intervals(), 0u);
    far.apply(d);
    ASSERT_EQ(far.snapshot(), t.snapshot()) << "step " << step;
    ASSERT_EQ(far.deltas(), near.deltas());
    EXPECT_THROW(far.apply(d), vnfkit::snapshot::SnapshotError);  // applied twice
    if (!prev.empty()) {
      EXPECT_THROW(far.apply(prev), vnfkit::snapshot::SnapshotError);
    }
    prev = d;
    span = 1 + rng() % 6, in_span = 0, ++spans;
  }
  EXPECT_GT(spans, 40u);
  // a span that is skipped is refused at the next
  near.apply(t.take_delta());
  (void)near.take_delta();
  near.apply(t.take_delta());
  EXPECT_THROW(far.apply(near.take_delta()), vnfkit::snapshot::SnapshotError);
  // clear_delta starts a new span: the next take holds only what follows it
  near.apply(t.take_delta());
  near.clear_delta();
  EXPECT_THROW((void)near.take_delta(), std::logic_error);
}
