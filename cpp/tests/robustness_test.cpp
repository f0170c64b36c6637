// Adversarial robustness of the engine entry points the Python bridge exposes: per-packet columns
// written with garbage (as Python can do through the writable numpy views) must never make an
// engine loop read or write out of bounds, and damaged snapshot / log images must be rejected with
// an exception, never crash. Run under the asan preset: any overread aborts the test.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "vnfkit/classify/classifier.hpp"
#include "vnfkit/flow/exception_table.hpp"
#include "vnfkit/flow/flow_table.hpp"
#include "vnfkit/flow/range_table.hpp"
#include "vnfkit/ftlog/log.hpp"
#include "vnfkit/packet/build.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/parse.hpp"
#include "vnfkit/packet/rewrite.hpp"
#include "vnfkit/snapshot/snapshot.hpp"

using namespace vnfkit;
using packet::PacketBatch;

namespace {

PacketBatch built_batch(std::mt19937& mt, int n) {
  std::vector<flow::FlowKey> keys(static_cast<std::size_t>(n));
  std::vector<std::uint16_t> sizes(keys.size());
  std::vector<std::uint64_t> ts(keys.size());
  std::vector<std::uint8_t> tf(keys.size(), 0x10);
  std::vector<std::uint32_t> seq(keys.size());
  const std::uint8_t protos[3] = {6, 17, 1};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    keys[i] = flow::make_v4_key(static_cast<std::uint32_t>(mt()), static_cast<std::uint32_t>(mt()), 1, 2,
                                protos[i % 3]);
    if (i % 4 == 3) {
      keys[i].family = 6;
      keys[i].proto = (mt() % 2) ? 58 : 6;
    }
    sizes[i] = static_cast<std::uint16_t>(60 + mt() % 200);
    ts[i] = i;
  }
  PacketBatch b = packet::build_packets(keys.data(), sizes.data(), ts.data(), tf.data(), seq.data(), keys.size());
  packet::parse_batch(b);
  return b;
}

// Write garbage into random columns of random packets (everything Python can reach; offsets are
// read-only there, data bytes are fair game).
void tamper(PacketBatch& b, std::mt19937& mt) {
  const std::size_t n = b.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (mt() % 2) continue;
    switch (mt() % 11) {
      case 0: b.l3_offset[i] = static_cast<std::uint16_t>(mt()); break;
      case 1: b.l4_offset[i] = static_cast<std::uint16_t>(mt()); break;
      case 2: b.l4_len[i] = static_cast<std::uint16_t>(mt()); break;
      case 3: b.flags[i] = static_cast<std::uint8_t>(mt()); break;
      case 4: b.drop[i] = static_cast<std::uint8_t>(mt()); break;
      case 5: b.key[i].family = static_cast<std::uint8_t>(mt()); break;
      case 6: b.key[i].proto = static_cast<std::uint8_t>(mt()); break;
      case 7: {
        auto* p = reinterpret_cast<std::uint8_t*>(&b.key[i]);
        for (std::size_t j = 0; j < sizeof(flow::FlowKey); ++j) p[j] = static_cast<std::uint8_t>(mt());
        break;
      }
      case 8: b.tcp_flags[i] = static_cast<std::uint8_t>(mt()); break;
      case 9: {
        const std::size_t len = b.offsets[i + 1] - b.offsets[i];
        if (len) b.data[b.offsets[i] + mt() % len] = static_cast<std::uint8_t>(mt());
        break;
      }
      default: b.queue[i] = static_cast<std::uint16_t>(mt()); b.port[i] = static_cast<std::uint16_t>(mt()); break;
    }
  }
}

}  // namespace

TEST(Robustness, TamperedColumnsThroughEveryBatchEngineCall) {
  std::mt19937 mt(2026);
  classify::ClassifierConfig cc;
  cc.num_queues = 4;
  classify::MultiQueueClassifier clf(cc);
  flow::FlowTableConfig fc;
  fc.capacity = 16;  // fills up: inserts must fail cleanly
  fc.value_size = 8;
  fc.idle_timeout_ns = 1000;
  flow::FlowTable ft(fc);
  flow::ExceptionTable et(8);
  const flow::Range all{0, 0xFFFFFFFFu, 7};
  flow::RangeTable rt(std::span<const flow::Range>(&all, 1));
  for (int round = 0; round < 200; ++round) {
    const int n = 1 + static_cast<int>(mt() % 64);
    PacketBatch b = built_batch(mt, n);
    tamper(b, mt);
    const auto un = static_cast<std::size_t>(n);
    std::vector<std::uint8_t> ok(un);
    packet::verify_checksums(b, ok.data());
    packet::fix_checksums(b);
    std::vector<std::uint32_t> idx(un), addr(un);
    std::vector<std::uint16_t> port(un);
    for (std::size_t i = 0; i < un; ++i) {
      idx[i] = static_cast<std::uint32_t>(mt() % un);
      addr[i] = static_cast<std::uint32_t>(mt());
      port[i] = static_cast<std::uint16_t>(mt());
    }
    packet::rewrite_v4(b, packet::Side::kSource, idx.data(), addr.data(), port.data(), un);
    packet::rewrite_v4(b, packet::Side::kDestination, idx.data(), addr.data(), port.data(), un);

    std::vector<std::uint32_t> order(un), qoffs(cc.num_queues + 1);
    clf.classify(b, order.data(), qoffs.data());
    ASSERT_EQ(qoffs[cc.num_queues], un);  // the queue lists still partition the batch
    for (std::size_t i = 0; i < un; ++i) ASSERT_LT(b.queue[i], cc.num_queues);

    std::size_t counts[static_cast<int>(packet::DropReason::kCount_)];
    packet::count_drops(b, counts);
    std::size_t total = 0;
    for (auto c : counts) total += c;
    ASSERT_EQ(total, un);

    PacketBatch s = packet::select(b, idx.data(), un);
    ASSERT_NO_THROW(s.validate());
    packet::parse_batch(s);  // re-parsing tampered bytes is the parser fuzz

    std::vector<std::uint32_t> slots(un);
    std::vector<std::uint8_t> is_new(un);
    ft.lookup_or_insert(b.key.data(), b.flow_id.data(), b.ts_ns.data(), b.tcp_flags.data(), un, slots.data(),
                        is_new.data());
    for (std::size_t i = 0; i < un; ++i) ASSERT_TRUE(slots[i] == flow::kNoSlot || slots[i] < fc.capacity);
    ASSERT_LE(ft.size(), fc.capacity);
    flow::Expired ex;
    ft.expire(static_cast<std::uint64_t>(round) * 100, ex);

    std::vector<std::uint32_t> targets(un, 3), out(un);
    std::vector<std::uint8_t> ins(un);
    et.insert(b.key.data(), targets.data(), un, ins.data());
    ASSERT_LE(et.size(), 8u);
    const flow::ExceptionTable* tables[1] = {&et};
    flow::steer(tables, rt, b.key.data(), b.flow_id.data(), un, out.data());
    for (std::size_t i = 0; i < un; ++i) ASSERT_TRUE(out[i] == 3 || out[i] == 7);
  }
}

TEST(Robustness, DamagedSnapshotsAreRejectedNeverFollowed) {
  std::mt19937 mt(77);
  flow::FlowTableConfig fc;
  fc.capacity = 32;
  fc.value_size = 12;
  flow::FlowTable ft(fc);
  flow::ExceptionTable et;
  std::vector<flow::FlowKey> keys(20);
  std::vector<std::uint32_t> ids(20), slots(20), tg(20, 5);
  std::vector<std::uint64_t> ts(20);
  std::vector<std::uint8_t> nw(20);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    keys[i] = flow::make_v4_key(static_cast<std::uint32_t>(mt()), 1, 2, 3, 6);
  }
  ft.lookup_or_insert(keys.data(), ids.data(), ts.data(), nullptr, keys.size(), slots.data(), nw.data());
  et.insert(keys.data(), tg.data(), keys.size(), nw.data());
  const flow::Range rs[2] = {{0, 99, 1}, {100, 0xFFFFFFFFu, 2}};
  flow::RangeTable rt{std::span<const flow::Range>(rs, 2)};
  const std::vector<std::vector<std::uint8_t>> images = {ft.snapshot(), et.snapshot(), rt.snapshot()};
  int rejected = 0;
  for (int t = 0; t < 3000; ++t) {
    std::vector<std::uint8_t> img = images[static_cast<std::size_t>(t) % 3];
    if (mt() % 3 == 0) {
      img.resize(mt() % img.size());
    } else {
      for (unsigned k = 0; k < 1 + mt() % 4; ++k) img[mt() % img.size()] = static_cast<std::uint8_t>(mt());
    }
    // Whatever the damage, each restore either throws or yields a consistent object.
    try { (void)flow::FlowTable::restore(img); } catch (const std::exception&) { ++rejected; }
    try { (void)flow::ExceptionTable::restore(img); } catch (const std::exception&) { ++rejected; }
    try { (void)flow::RangeTable::restore(img); } catch (const std::exception&) { ++rejected; }
  }
  EXPECT_GT(rejected, 2 * 3000);
}

TEST(Robustness, DamagedLogChunksAreRejected) {
  std::mt19937 mt(5);
  std::vector<ftlog::Determinant> recs(10);
  for (auto& r : recs) {
    r.packet_id = mt();
    r.value = mt();
  }
  const auto chunk = ftlog::encode_chunk(3, 100, recs);
  ASSERT_EQ(ftlog::parse_chunks(chunk).size(), 1u);
  for (int t = 0; t < 3000; ++t) {
    std::vector<std::uint8_t> c = chunk;
    if (mt() % 3 == 0) {
      c.resize(mt() % c.size());
      if (c.empty()) continue;
    } else {
      const std::size_t j = mt() % c.size();
      const auto old = c[j];
      c[j] = static_cast<std::uint8_t>(old ^ (1u + mt() % 255));
    }
    EXPECT_THROW((void)ftlog::parse_chunks(c), std::exception) << "damage not detected in round " << t;
  }
}
