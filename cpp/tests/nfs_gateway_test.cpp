#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "vnfkit/nfs/gateway.hpp"

using vnfkit::nfs::split_gateway;
using vnfkit::nfs::touch_deadlines;
using vnfkit::packet::PacketBatch;

namespace {
void set_v4(vnfkit::flow::FlowKey& k, std::uint32_t src, std::uint32_t dst) {
  k = {};
  for (int b = 0; b < 4; ++b) {
    k.src[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(src >> (24 - 8 * b));
    k.dst[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(dst >> (24 - 8 * b));
  }
  k.family = 4;
  k.proto = 6;
}

PacketBatch batch_of(std::size_t n) {
  PacketBatch b;
  b.offsets.assign(n + 1, 0);
  b.resize_columns(n);
  return b;
}
}  // namespace

TEST(SplitGateway, SortsEveryPacketIntoOneList) {
  constexpr std::uint32_t kNet = 0x0A000000, kMask = 0xFF000000, kPub = 0xC0000201;
  PacketBatch b = batch_of(9);
  set_v4(b.key[0], 0x0A010203, 0x08080808);  // outbound
  set_v4(b.key[1], 0x08080808, kPub);        // inbound
  set_v4(b.key[2], 0x0A000001, 0x0A000002);  // inside -> inside: other
  set_v4(b.key[3], 0x0A000001, kPub);        // inside -> public address: other
  set_v4(b.key[4], 0x08080808, 0x08080404);  // outside -> outside: other
  b.key[5] = {};
  b.key[5].family = 6;                       // IPv6: not_v4
  set_v4(b.key[6], 0x0A010203, 0x08080808);
  b.drop[6] = 1;                             // dropped by the parser: in no list
  set_v4(b.key[7], 0x0A010203, 0x08080808);
  b.flags[7] = vnfkit::packet::kFlagFragment;  // non-first fragment: other
  set_v4(b.key[8], 0x0A010203, 0x08080808);
  b.flags[8] = vnfkit::packet::kFlagFragment | vnfkit::packet::kFlagFirstFragment;  // first: outbound
  std::vector<std::uint32_t> src(9), dst(9), out(9), in(9), other(9), nv4(9), onp(9), inp(9);
  b.port.assign(9, 77);
  const auto c = split_gateway(b, kNet, kMask, kPub, 1, 2, false,
                               {src.data(), dst.data(), out.data(), in.data(), other.data(), nv4.data(), onp.data(),
                                inp.data()});
  ASSERT_EQ(c.outbound, 2u);
  EXPECT_EQ(out[0], 0u);
  EXPECT_EQ(out[1], 8u);
  ASSERT_EQ(c.inbound, 1u);
  EXPECT_EQ(in[0], 1u);
  ASSERT_EQ(c.other, 4u);
  EXPECT_EQ((std::vector<std::uint32_t>(other.begin(), other.begin() + 4)), (std::vector<std::uint32_t>{2, 3, 4, 7}));
  ASSERT_EQ(c.not_v4, 1u);
  EXPECT_EQ(nv4[0], 5u);
  EXPECT_EQ(src[0], 0x0A010203u);
  EXPECT_EQ(dst[1], kPub);
  EXPECT_EQ(src[5], 0u);
  EXPECT_EQ(src[6], 0u);
  EXPECT_EQ(b.port, (std::vector<std::uint16_t>{1, 2, 0, 0, 0, 0, 0, 0, 1}));
  EXPECT_EQ(c.outbound_np + c.inbound_np, 0u);
  // ports_only: an outbound UDP stays, an outbound ICMP and an inbound GRE move to their own lists
  b.key[0].proto = 1;
  b.key[1].proto = 47;
  b.key[8].proto = 17;
  const auto c2 = split_gateway(b, kNet, kMask, kPub, 1, 2, true,
                                {src.data(), dst.data(), out.data(), in.data(), other.data(), nv4.data(), onp.data(),
                                 inp.data()});
  ASSERT_EQ(c2.outbound, 1u);
  EXPECT_EQ(out[0], 8u);
  ASSERT_EQ(c2.outbound_np, 1u);
  EXPECT_EQ(onp[0], 0u);
  ASSERT_EQ(c2.inbound_np, 1u);
  EXPECT_EQ(inp[0], 1u);
  EXPECT_EQ(c2.inbound, 0u);
  EXPECT_EQ(b.port[0], 0u);
  EXPECT_EQ(b.port[8], 1u);
  EXPECT_EQ(c2.min_ts, 0u);  // batch_of: every time 0
  b.ts_ns = {90, 40, 70, 55, 41, 99, 3, 60, 80};
  const auto c3 = split_gateway(b, kNet, kMask, kPub, 1, 2, true,
                                {src.data(), dst.data(), out.data(), in.data(), other.data(), nv4.data(), onp.data(),
                                 inp.data()});
  EXPECT_EQ(c3.min_ts, 3u);  // every packet counts, the dropped one (6) too
}

TEST(NatExpired, ArmedIndexFindsWhatTheFullPassFinds) {
  vnfkit::flow::FlowTableConfig cfg;
  cfg.capacity = 40;
  cfg.value_size = sizeof(vnfkit::nfs::NatRecord);
  vnfkit::flow::FlowTable t(cfg);
  std::vector<vnfkit::flow::FlowKey> keys(30);
  for (std::size_t i = 0; i < keys.size(); ++i) set_v4(keys[i], 0x0A000000 + static_cast<std::uint32_t>(i), 1);
  std::vector<std::uint32_t> slots(30), ids(30, 0);
  std::vector<std::uint64_t> ts(30, 0);
  ASSERT_EQ(t.lookup_or_insert(keys.data(), ids.data(), ts.data(), nullptr, 30, slots.data(), nullptr), 30u);
  auto* rec = reinterpret_cast<vnfkit::nfs::NatRecord*>(t.values());
  for (std::size_t i = 0; i < 30; ++i) rec[slots[i]].deadline = i % 5 == 0 ? 0 : 10 * i;  // some without one
  t.remove_slot(slots[7]);                                                                  // not live any more
  std::vector<std::uint8_t> armed(40, 1);
  std::vector<std::uint32_t> full(40), fast(40);
  for (const std::uint64_t now : {0ULL, 5ULL, 100ULL, 170ULL, 1000ULL}) {
    const auto k = vnfkit::nfs::nat_expired(t, now, full.data());
    ASSERT_EQ(vnfkit::nfs::nat_expired(t, now, fast.data(), armed.data()), k);
    EXPECT_TRUE(std::equal(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(k), fast.begin()));
  }
  EXPECT_EQ(armed[slots[0]], 0);   // deadline 0: cleared
  EXPECT_EQ(armed[slots[7]], 0);   // not live: cleared
  EXPECT_EQ(armed[35], 0);         // free slot: cleared
  EXPECT_EQ(armed[slots[29]], 1);  // a deadline: kept
}

TEST(NatExpired, SparseArmedBytesAcrossBlocks) {
  // armed bytes scattered over several 32-slot blocks, most 8-slot words empty, and a tail
  vnfkit::flow::FlowTableConfig cfg;
  cfg.capacity = 100;
  cfg.value_size = sizeof(vnfkit::nfs::NatRecord);
  vnfkit::flow::FlowTable t(cfg);
  std::vector<vnfkit::flow::FlowKey> keys(100);
  for (std::size_t i = 0; i < keys.size(); ++i) set_v4(keys[i], 0x0A000000 + static_cast<std::uint32_t>(i), 1);
  std::vector<std::uint32_t> slots(100), ids(100, 0);
  std::vector<std::uint64_t> ts(100, 0);
  ASSERT_EQ(t.lookup_or_insert(keys.data(), ids.data(), ts.data(), nullptr, 100, slots.data(), nullptr), 100u);
  auto* rec = reinterpret_cast<vnfkit::nfs::NatRecord*>(t.values());
  for (std::size_t s = 0; s < 100; ++s) rec[s].deadline = 10 * s + 1;
  std::vector<std::uint8_t> armed(100, 0);
  const std::vector<std::uint32_t> on = {0, 9, 26, 33, 47, 64, 71, 90, 96, 99};
  for (const auto s : on) armed[s] = 1;
  std::vector<std::uint32_t> got(100);
  for (const std::uint64_t now : {0ULL, 91ULL, 500ULL, 2000ULL}) {
    std::vector<std::uint32_t> want;
    for (const auto s : on) {
      if (10 * s + 1 <= now) want.push_back(s);
    }
    const auto k = vnfkit::nfs::nat_expired(t, now, got.data(), armed.data());
    ASSERT_EQ(k, want.size()) << "now " << now;
    EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin()));
  }
}

TEST(SplitGateway, RejectsInconsistentColumns) {
  PacketBatch b = batch_of(3);
  b.drop.resize(2);
  std::vector<std::uint32_t> x(3);
  EXPECT_THROW(split_gateway(b, 0, 0, 0, 1, 2, false,
                             {x.data(), x.data(), x.data(), x.data(), x.data(), x.data(), x.data(), x.data()}),
               std::invalid_argument);
}

struct Rec {
  std::uint64_t deadline;
  std::uint64_t timeout;
  std::uint32_t other;
  std::uint32_t pad;
};

TEST(TouchDeadlines, RefreshesInOrderAndAppliesCloseTimeout) {
  std::vector<Rec> r(4, Rec{0, 100, 7, 0});
  r[1].deadline = 50;
  const std::uint32_t slots[] = {1, 1, 2, 3};
  const std::uint64_t ts[] = {60, 70, 10, 20};
  const std::uint8_t flags[] = {0, 0, 0x01, 0x10};
  std::uint64_t old[4];
  touch_deadlines(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0, 8, slots, ts, flags, 4, 0x05,
                  30, old);
  EXPECT_EQ(old[0], 50u);   // first touch sees the pre-call deadline (expired at ts 60)
  EXPECT_EQ(old[1], 160u);  // second touch of the same record sees the first touch's deadline
  EXPECT_EQ(old[2], 0u);
  EXPECT_EQ(r[1].deadline, 170u);
  EXPECT_EQ(r[2].timeout, 30u);  // FIN: done timeout
  EXPECT_EQ(r[2].deadline, 40u);
  EXPECT_EQ(r[3].timeout, 100u);  // ACK only
  EXPECT_EQ(r[3].deadline, 120u);
  EXPECT_EQ(r[0].deadline, 0u);  // untouched
  EXPECT_EQ(r[1].other, 7u);
  // null flags: no close handling
  const std::uint32_t s2[] = {2};
  const std::uint64_t t2[] = {100};
  touch_deadlines(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0, 8, s2, t2, nullptr, 1, 0x05,
                  1, old);
  EXPECT_EQ(r[2].deadline, 130u);
}

TEST(TouchDeadlines, ValidatesBeforeTouching) {
  std::vector<Rec> r(2, Rec{5, 100, 0, 0});
  const std::uint32_t slots[] = {0, 2};
  const std::uint64_t ts[] = {1, 1};
  std::uint64_t old[2];
  EXPECT_THROW(touch_deadlines(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0, 8, slots, ts,
                               nullptr, 2, 0, 0, old),
               std::invalid_argument);
  EXPECT_EQ(r[0].deadline, 5u);
  EXPECT_THROW(touch_deadlines(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0, 20, slots, ts,
                               nullptr, 1, 0, 0, old),
               std::invalid_argument);
  // Regression: an offset near SIZE_MAX made `offset + 8` wrap and pass the fit check.
  const auto huge = std::numeric_limits<std::size_t>::max() - 3;
  EXPECT_THROW(touch_deadlines(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), huge, 8, slots, ts,
                               nullptr, 1, 0, 0, old),
               std::invalid_argument);
  PacketBatch b = batch_of(1);
  const std::uint32_t idx[] = {0};
  std::uint8_t expired[1];
  EXPECT_THROW(vnfkit::nfs::touch_deadlines_at(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0,
                                               huge, slots, b, idx, 1, 0, 0, expired),
               std::invalid_argument);
  EXPECT_EQ(r[0].deadline, 5u);
  EXPECT_EQ(r[0].timeout, 100u);
}

TEST(TouchDeadlinesAt, ReadsTimesAndFlagsFromTheBatch) {
  PacketBatch b = batch_of(3);
  b.ts_ns = {100, 200, 300};
  b.tcp_flags = {0x10, 0x04, 0x10};
  std::vector<Rec> r(2, Rec{0, 50, 0, 0});
  r[0].deadline = 150;
  const std::uint32_t slots[] = {0, 0, 1, 1};
  const std::uint32_t idx[] = {2, 0, 1, 2};
  std::uint8_t expired[4];
  const auto k = vnfkit::nfs::touch_deadlines_at(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0,
                                                 8, slots, b, idx, 4, 0x05, 10, expired);
  EXPECT_EQ(k, 2u);
  EXPECT_EQ(expired[0], 1);  // ts 300 >= 150: expired
  EXPECT_EQ(expired[1], 0);  // deadline now 350 > 100
  EXPECT_EQ(expired[2], 0);  // new record (deadline 0)
  EXPECT_EQ(expired[3], 1);  // the RST at 200 set timeout 10: deadline 210 <= 300, expired
  EXPECT_EQ(r[0].deadline, 150u);  // 100 + 50 (the last touch wins, in order)
  EXPECT_EQ(r[1].timeout, 10u);
  EXPECT_EQ(r[1].deadline, 310u);
  const std::uint32_t bad_idx[] = {3};
  EXPECT_THROW(vnfkit::nfs::touch_deadlines_at(reinterpret_cast<std::uint8_t*>(r.data()), r.size(), sizeof(Rec), 0, 8,
                                               slots, b, bad_idx, 1, 0, 0, expired),
               std::invalid_argument);
}
