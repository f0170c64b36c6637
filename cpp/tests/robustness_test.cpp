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
#include "vnfkit/packet/pcap.hpp"
#include "vnfkit/packet/rewrite.hpp"
#include "vnfkit/snapshot/snapshot.hpp"
#include "vnfkit/state/shared_state.hpp"

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
  for (int round = 0; round < 1000; ++round) {
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

namespace {

// Re-seal a damaged image with a valid CRC32C, so restore() gets past the checksum and must rely
// on its semantic checks (a CRC is not a MAC: anyone can craft such an image).
void reseal(std::vector<std::uint8_t>& img) {
  const std::size_t body = img.size() - 4;
  const std::uint32_t crc = snapshot::crc32c(std::span<const std::uint8_t>(img.data(), body));
  std::memcpy(img.data() + body, &crc, 4);
}

// Damage only the payload (after the kind header), then reseal.
std::vector<std::uint8_t> crafted(const std::vector<std::uint8_t>& good, std::mt19937& mt) {
  std::vector<std::uint8_t> img = good;
  std::uint16_t kind_len;
  std::memcpy(&kind_len, img.data() + 10, 2);
  const std::size_t start = 12u + kind_len + 8u, end = img.size() - 4;
  if (end <= start) return img;
  const auto edits = 1 + mt() % 3;
  for (std::uint_fast32_t k = 0; k < edits; ++k) {
    const std::size_t j = start + mt() % (end - start);
    img[j] = (mt() % 2) ? static_cast<std::uint8_t>(mt()) : static_cast<std::uint8_t>(img[j] ^ (1u << (mt() % 8)));
  }
  reseal(img);
  return img;
}

}  // namespace

TEST(Robustness, CraftedSnapshotsWithValidCrcAreCheckedOrConsistent) {
  std::mt19937 mt(99);
  flow::FlowTableConfig fc;
  fc.capacity = 16;
  fc.value_size = 8;
  fc.idle_timeout_ns = 1000;
  fc.close_timeout_ns = 100;
  flow::FlowTable ft(fc);
  std::vector<flow::FlowKey> keys(24);
  for (auto& k : keys) k = flow::make_v4_key(static_cast<std::uint32_t>(mt()), 1, 2, 3, 6);
  std::vector<std::uint32_t> ids(keys.size()), slots(keys.size()), tg(keys.size(), 4);
  std::vector<std::uint64_t> ts(keys.size(), 5);
  std::vector<std::uint8_t> fl(keys.size(), 0x01), nw(keys.size());
  ft.lookup_or_insert(keys.data(), ids.data(), ts.data(), fl.data(), 10, slots.data(), nw.data());
  flow::ExceptionTable et(32);
  et.insert(keys.data(), tg.data(), 10, nw.data());
  const flow::Range rs[3] = {{0, 99, 1}, {100, 999, 2}, {1000, 0xFFFFFFFFu, 3}};
  flow::RangeTable rt{std::span<const flow::Range>(rs, 3)};
  const auto ft_img = ft.snapshot(), et_img = et.snapshot(), rt_img = rt.snapshot();
  int accepted = 0;
  for (int t = 0; t < 2000; ++t) {
    try {
      flow::FlowTable r = flow::FlowTable::restore(crafted(ft_img, mt));
      ++accepted;
      // Whatever was accepted must behave: lookups, inserts up to capacity, expiry, removal.
      r.lookup_or_insert(keys.data(), ids.data(), ts.data(), fl.data(), keys.size(), slots.data(), nw.data());
      ASSERT_LE(r.size(), r.capacity());
      for (auto s : slots) ASSERT_TRUE(s == flow::kNoSlot || s < r.capacity());
      flow::Expired ex;
      r.expire(1u << 20, ex);
      r.remove(keys.data(), keys.size(), nw.data());
      ASSERT_EQ(r.live_slots().size(), r.size());
    } catch (const snapshot::SnapshotError&) {
    } catch (const std::invalid_argument&) {
    }
    try {
      flow::ExceptionTable r = flow::ExceptionTable::restore(crafted(et_img, mt));
      ++accepted;
      std::vector<std::uint32_t> out(keys.size());
      r.lookup(keys.data(), keys.size(), out.data());
      r.insert(keys.data(), tg.data(), keys.size(), nw.data());
      ASSERT_TRUE(r.capacity() == 0 || r.size() <= r.capacity());
      r.erase(keys.data(), keys.size(), nw.data());
    } catch (const snapshot::SnapshotError&) {
    } catch (const std::invalid_argument&) {
    }
    try {
      flow::RangeTable r = flow::RangeTable::restore(crafted(rt_img, mt));
      ++accepted;
      std::vector<std::uint32_t> q(64), out(64);
      for (auto& x : q) x = static_cast<std::uint32_t>(mt());
      r.lookup(q.data(), q.size(), out.data());
      const auto ranges = r.ranges();
      ASSERT_NO_THROW(flow::RangeTable{std::span<const flow::Range>(ranges)});  // accepted images are valid tables
    } catch (const snapshot::SnapshotError&) {
    } catch (const std::invalid_argument&) {
    }
  }
  EXPECT_GT(accepted, 0);  // some edits (values, timestamps, targets) are legitimately accepted
}

TEST(Robustness, BoundedExceptionTableBeyondThePresizeGrowsAndStillEnforcesCapacity) {
  // Regression: a bounded table used to allocate its whole capacity up front, so a crafted
  // snapshot (or capacity=2**32-17) asked for tens of GB. Now it is pre-sized up to 65536 entries.
  flow::ExceptionTable big(0xFFFFFFF0u);
  EXPECT_LT(big.memory_bytes(), std::size_t{64} << 20);
  const std::size_t cap = 70000;
  flow::ExceptionTable t(cap);
  std::vector<flow::FlowKey> keys(cap + 5);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    keys[i] = flow::make_v4_key(static_cast<std::uint32_t>(i), 9, 1, 2, 17);
  }
  std::vector<std::uint32_t> tg(keys.size()), out(keys.size());
  for (std::size_t i = 0; i < tg.size(); ++i) tg[i] = static_cast<std::uint32_t>(i);
  std::vector<std::uint8_t> ok(keys.size());
  EXPECT_EQ(t.insert(keys.data(), tg.data(), keys.size(), ok.data()), 5u);
  EXPECT_EQ(t.size(), cap);
  t.lookup(keys.data(), keys.size(), out.data());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(ok[i], i < cap ? 1 : 0);
    ASSERT_EQ(out[i], i < cap ? tg[i] : flow::kNoTarget);
  }
  const auto r = flow::ExceptionTable::restore(t.snapshot());
  r.lookup(keys.data(), keys.size(), out.data());
  for (std::size_t i = 0; i < keys.size(); ++i) ASSERT_EQ(out[i], i < cap ? tg[i] : flow::kNoTarget);
}

TEST(Robustness, CraftedSharedObjectSnapshotsAreCheckedOrConsistent) {
  std::mt19937 mt(123);
  auto declare = [](state::SharedState& s) {
    const std::uint16_t sub[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    return std::make_tuple(s.counters("a", 8, false), s.counters("k", 8, true), s.token_buckets("t", 4, 1000.0, 5.0),
                           s.port_pool("p", 100, 107, std::span<const std::uint16_t>(sub, 8)), s.registers("r", 4, 0));
  };
  auto src = std::make_shared<state::SharedState>();
  auto [a, k, tb, pp, rg] = declare(*src);
  auto ctx = src->context(0, state::Mode::kUnlogged, 1);
  const std::size_t n = 8;
  std::vector<std::uint64_t> pid(n), keys(n), now(n, 10);
  std::vector<std::int64_t> d(n, 1);
  std::vector<std::uint64_t> o64(n);
  std::vector<std::uint8_t> o8(n);
  std::vector<std::uint16_t> ports(n), subs(n);
  std::vector<std::uint32_t> o32(n), zeros(n, 0), ones(n, 1);
  for (std::size_t i = 0; i < n; ++i) {
    pid[i] = i;
    keys[i] = i % 4;
    subs[i] = static_cast<std::uint16_t>(i % 2);
  }
  auto work = [&](state::Context& c, state::Counters& ca, state::Counters& ck, state::TokenBuckets& t,
                  state::PortPool& p, state::Registers& r) {
    ca.add(c, keys, d, pid, o64);
    ck.add(c, pid, d, pid, o64);
    t.consume(c, keys, now, {}, pid, o8);
    p.allocate(c, pid, subs, ports);
    std::vector<std::uint16_t> got;
    for (auto x : ports) if (x) got.push_back(x);
    p.release(c, got, std::span<const std::uint64_t>(pid).first(got.size()), std::span<std::uint8_t>(o8).first(got.size()));
    r.access(c, state::RegOp::kCas, keys, zeros, ones, pid, o32);
    r.access(c, state::RegOp::kAdd, keys, ones, {}, pid, o32);
  };
  work(*ctx, *a, *k, *tb, *pp, *rg);
  const std::vector<std::vector<std::uint8_t>> images = {a->snapshot(), k->snapshot(), tb->snapshot(), pp->snapshot(),
                                                         rg->snapshot()};
  int accepted = 0;
  for (int t = 0; t < 2500; ++t) {
    auto s2 = std::make_shared<state::SharedState>();
    auto [a2, k2, tb2, pp2, rg2] = declare(*s2);
    auto c2 = s2->context(0, state::Mode::kUnlogged, 2);
    const std::size_t which = static_cast<std::size_t>(t) % images.size();
    state::SharedObject* objs[5] = {a2.get(), k2.get(), tb2.get(), pp2.get(), rg2.get()};
    try {
      objs[which]->restore(crafted(images[which], mt));
    } catch (const snapshot::SnapshotError&) {
      continue;
    } catch (const std::invalid_argument&) {
      continue;
    }
    ++accepted;
    work(*c2, *a2, *k2, *tb2, *pp2, *rg2);  // under ASan: an accepted image must never be followed out of bounds
    (void)s2->snapshot();
  }
  EXPECT_GT(accepted, 0);
}

TEST(Robustness, PcapReaderStaysFailedAfterAnError) {
  // Regression: after a corrupt record the reader went on parsing from a misaligned position, so
  // each later read() decoded garbage as record headers (and could yield bogus packets).
  std::mt19937 mt(3);
  PacketBatch b = built_batch(mt, 4);
  const std::string path = testing::TempDir() + "vnfkit_robustness_sticky.pcap";
  packet::write_pcap(path, b, false);
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const long second = 24 + 16 + static_cast<long>(b.offsets[1] - b.offsets[0]);
    ASSERT_EQ(std::fseek(f, second + 8, SEEK_SET), 0);
    const std::uint8_t huge[4] = {0xff, 0xff, 0xff, 0x7f};  // caplen 2**31-1
    ASSERT_EQ(std::fwrite(huge, 1, 4, f), 4u);
    std::fclose(f);
  }
  packet::PcapReader r(path);
  PacketBatch out;
  EXPECT_EQ(r.read(out, 1), 1u);
  std::string first;
  try {
    r.read(out, 8);
    FAIL() << "corrupt record not detected";
  } catch (const packet::PcapError& e) {
    first = e.what();
  }
  EXPECT_EQ(out.size(), 0u);
  EXPECT_NO_THROW(out.validate());
  for (int k = 0; k < 3; ++k) {
    try {
      r.read(out, 8);
      FAIL() << "a failed reader must stay failed";
    } catch (const packet::PcapError& e) {
      EXPECT_EQ(std::string(e.what()), first);
    }
  }
  EXPECT_EQ(r.packets_read(), 1u);
  std::remove(path.c_str());
}
