// SlabRing + SlabLayout + Buffer: stage order, wrap-around, futex sleep/wake with real threads,
// write-back of reallocated columns, views that outlive reallocation.
#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>
#include <thread>
#include <vector>

#include "vnfkit/packet/batch.hpp"
#include "vnfkit/packet/buffer.hpp"
#include "vnfkit/runtime/ring.hpp"
#include "vnfkit/runtime/slab.hpp"

using vnfkit::packet::Buffer;
using vnfkit::packet::PacketBatch;
using vnfkit::runtime::RingConfig;
using vnfkit::runtime::SlabLayout;
using vnfkit::runtime::SlabRing;

namespace {

struct Mem {
  explicit Mem(std::size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(64, (n + 63) / 64 * 64))), size(n) {}
  ~Mem() { std::free(p); }
  std::span<std::byte> span() { return {p, size}; }
  std::byte* p;
  std::size_t size;
};

PacketBatch make_batch(std::size_t n, std::size_t bytes_each, std::uint64_t first_id) {
  PacketBatch b;
  b.clear();
  std::vector<std::uint8_t> pkt(bytes_each);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < bytes_each; ++j) pkt[j] = static_cast<std::uint8_t>(first_id + i + j);
    b.append(pkt, 1000 + i);
    b.packet_id[i] = first_id + i;
  }
  return b;
}

}  // namespace

TEST(Buffer, ViewOfOldBlockSurvivesReallocation) {
  Buffer<std::uint32_t> b;
  b.assign(4, 7u);
  auto viewer = b.owner();  // what a numpy view holds
  const std::uint32_t* old = b.data();
  std::vector<std::uint32_t> repl(1000, 9u);
  b.swap(repl);
  EXPECT_NE(b.data(), old);
  EXPECT_EQ(old[3], 7u);  // still valid memory: the viewer keeps it alive
  EXPECT_EQ(repl.size(), 4u);
  EXPECT_EQ(b.size(), 1000u);
  b.resize(100000);  // no viewer on the new block: grows in place like a vector
  EXPECT_EQ(b[999], 9u);
  EXPECT_EQ(b[99999], 0u);
}

TEST(Buffer, UnviewedGrowthAndResizeSemantics) {
  Buffer<std::uint16_t> b;
  for (std::uint16_t i = 0; i < 100; ++i) b.push_back(i);
  b.resize(150, 5);
  EXPECT_EQ(b[99], 99);
  EXPECT_EQ(b[149], 5);
  b.pop_back();
  EXPECT_EQ(b.size(), 149u);
  Buffer<std::uint16_t> c = b;  // deep copy
  c[0] = 42;
  EXPECT_EQ(b[0], 0);
  std::vector<std::uint16_t> more{1, 2, 3};
  b.insert(b.end(), more.begin(), more.end());
  EXPECT_EQ(b.size(), 152u);
  EXPECT_EQ(b.back(), 3);
}

TEST(Buffer, ExternalMemoryIsWrittenInPlaceAndCopiedOnGrowth) {
  std::vector<std::uint8_t> mem(8, 1);
  auto keep = std::make_shared<int>(0);
  auto b = Buffer<std::uint8_t>::external(mem.data(), mem.size(), keep);
  EXPECT_TRUE(b.is_external());
  b[0] = 9;
  EXPECT_EQ(mem[0], 9);
  b.resize(4);
  EXPECT_EQ(b.data(), mem.data());
  b.resize(64);  // beyond the external capacity: moves to an owned block
  EXPECT_NE(b.data(), mem.data());
  EXPECT_FALSE(b.is_external());
  EXPECT_EQ(b[0], 9);
  EXPECT_EQ(b[63], 0);
}

TEST(RingConfig, RejectsBadFieldsByName) {
  try {
    (void)RingConfig{3, 4096}.validated();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("slots"), std::string::npos);
  }
  EXPECT_THROW((void)RingConfig(RingConfig{8, 100}).validated(), std::invalid_argument);
  EXPECT_THROW(SlabLayout(1024, 4096), std::invalid_argument);
}

TEST(SlabRing, StagesInOrderWithWrapAround) {
  const RingConfig cfg{4, 1 << 16};
  Mem mem(SlabRing::required_bytes(cfg));
  auto ring = SlabRing::create(mem.span(), cfg);
  auto peer = SlabRing::attach(mem.span());
  EXPECT_EQ(peer.config().slots, 4u);
  for (std::uint32_t round = 0; round < 10; ++round) {
    for (int k = 0; k < 4; ++k) {
      ASSERT_TRUE(ring.can_fill());
      ring.commit_fill();
    }
    EXPECT_FALSE(ring.can_fill());
    for (int k = 0; k < 4; ++k) {
      ASSERT_TRUE(peer.input_ready());
      peer.commit_done();
    }
    EXPECT_FALSE(peer.input_ready());
    EXPECT_EQ(ring.outputs_ready(), 4u);
    for (int k = 0; k < 4; ++k) ring.commit_release();
    EXPECT_EQ(ring.in_flight(), 0u);
  }
}

TEST(SlabRing, AttachRejectsForeignMemory) {
  Mem mem(1 << 16);
  std::memset(mem.p, 0, mem.size);
  EXPECT_THROW(SlabRing::attach(mem.span()), std::invalid_argument);
}

TEST(SlabLayout, AppendWrapStoreRoundTrip) {
  const RingConfig cfg{2, 1 << 16};
  Mem mem(SlabRing::required_bytes(cfg));
  auto ring = SlabRing::create(mem.span(), cfg);
  SlabLayout lay(64, cfg.slab_bytes);
  std::byte* s = ring.slab(ring.fill_cursor());
  lay.reset(s);
  PacketBatch src = make_batch(100, 60, 500);
  std::vector<std::uint32_t> idx(100);
  std::iota(idx.begin(), idx.end(), 0u);
  EXPECT_EQ(lay.append(s, src, idx.data(), 40, 77), 40u);
  EXPECT_EQ(lay.append(s, src, idx.data() + 40, 60, 78), 24u);  // max_packets = 64
  auto keep = std::make_shared<int>(0);
  PacketBatch w = lay.wrap(s, keep);
  ASSERT_EQ(w.size(), 64u);
  w.validate();
  EXPECT_EQ(w.packet_id[63], 563u);
  EXPECT_EQ(lay.arrival(s)[63], 78u);
  EXPECT_TRUE(std::equal(w.packet(10).begin(), w.packet(10).end(), src.packet(10).begin()));
  w.port[5] = 3;  // an in-place write lands in the slab
  std::vector<std::uint8_t> rebuilt(w.data.begin(), w.data.end());
  rebuilt[0] ^= 0xFF;
  w.data.swap(rebuilt);  // a stage that rebuilds the data buffer
  ASSERT_TRUE(lay.store(s, w));
  PacketBatch c = lay.copy(s);
  EXPECT_EQ(c.port[5], 3);
  EXPECT_EQ(c.data[0], static_cast<std::uint8_t>(src.data[0] ^ 0xFF));
  w.data.resize(1 << 17);
  EXPECT_FALSE(lay.store(s, w));  // outgrew the slab: nothing written
}

TEST(SlabLayout, AppendOfScatteredIndicesCopiesEveryColumnAndStopsWhereTheBytesRunOut) {
  const RingConfig cfg{2, 1 << 16};
  Mem mem(SlabRing::required_bytes(cfg));
  auto ring = SlabRing::create(mem.span(), cfg);
  SlabLayout lay(300, cfg.slab_bytes);
  // packets of 40..439 bytes with every column distinct per packet
  PacketBatch src;
  src.clear();
  for (std::size_t i = 0; i < 300; ++i) {
    std::vector<std::uint8_t> pkt(40 + (i * 37) % 400);
    for (std::size_t j = 0; j < pkt.size(); ++j) pkt[j] = static_cast<std::uint8_t>(i * 7 + j);
    src.append(pkt, 5000 + i);
    src.packet_id[i] = 100000 + i;
    src.key[i] = vnfkit::flow::make_v4_key(static_cast<std::uint32_t>(i), 77, static_cast<std::uint16_t>(i), 9, 6);
    src.hash[i] = static_cast<std::uint32_t>(i * 3);
    src.flow_id[i] = static_cast<std::uint32_t>(i * 5);
    src.queue[i] = static_cast<std::uint16_t>(i % 3);
    src.port[i] = static_cast<std::uint16_t>(i % 4);
    src.drop[i] = static_cast<std::uint8_t>(i % 2);
    src.flags[i] = static_cast<std::uint8_t>(i % 8);
    src.tcp_flags[i] = static_cast<std::uint8_t>(i % 64);
    src.l3_offset[i] = static_cast<std::uint16_t>(i % 20);
    src.l4_offset[i] = static_cast<std::uint16_t>(i % 40);
    src.l4_len[i] = static_cast<std::uint16_t>(i % 60);
  }
  // runs of consecutive indices of varied lengths, with gaps (as one queue's share of a batch)
  std::vector<std::uint32_t> idx;
  for (std::uint32_t i = 0; i < 300; ++i) {
    if (i % 7 != 3 && i % 11 != 5) idx.push_back(i);
  }
  std::vector<std::uint64_t> arrival(300);
  for (std::size_t i = 0; i < 300; ++i) arrival[i] = 1'000'000 + i;
  for (bool paced : {false, true}) {
    std::byte* s = ring.slab(ring.fill_cursor());
    lay.reset(s);
    const std::uint64_t* arr = paced ? arrival.data() : nullptr;
    std::size_t k = 0, calls = 0;
    std::vector<std::uint64_t> want_arrival;  // of the unpaced appends: the call's arrival_ns
    while (k < idx.size()) {  // a few appends of uneven sizes, until the slab is full
      const std::size_t want = std::min<std::size_t>(idx.size() - k, 13 + calls * 17);
      const std::size_t got = lay.append(s, src, idx.data() + k, want, 42 + calls, arr);
      want_arrival.insert(want_arrival.end(), got, 42 + calls);
      ++calls;
      k += got;
      if (got < want) break;
    }
    const std::size_t full = k;
    ASSERT_GT(full, 0u);
    ASSERT_LT(full, idx.size());  // stopped by max_packets or by the bytes, not by running out
    std::uint64_t need = 0;
    for (std::size_t j = 0; j <= full && j < idx.size(); ++j) need += src.packet(idx[j]).size();
    EXPECT_LT(full, lay.max_packets());
    EXPECT_GT(need, lay.data_capacity());  // stopped by the bytes: the next one did not fit
    EXPECT_EQ(lay.append(s, src, idx.data() + full, 1, 0, arr), 0u);
    PacketBatch w = lay.wrap(s, std::make_shared<int>(0));
    ASSERT_EQ(w.size(), full);
    w.validate();
    for (std::size_t j = 0; j < full; ++j) {
      const std::uint32_t i = idx[j];
      ASSERT_TRUE(std::equal(w.packet(j).begin(), w.packet(j).end(), src.packet(i).begin(), src.packet(i).end())) << j;
      EXPECT_EQ(w.ts_ns[j], src.ts_ns[i]);
      EXPECT_EQ(w.packet_id[j], src.packet_id[i]);
      EXPECT_TRUE(w.key[j] == src.key[i]);
      EXPECT_EQ(w.hash[j], src.hash[i]);
      EXPECT_EQ(w.flow_id[j], src.flow_id[i]);
      EXPECT_EQ(w.queue[j], src.queue[i]);
      EXPECT_EQ(w.port[j], src.port[i]);
      EXPECT_EQ(w.drop[j], src.drop[i]);
      EXPECT_EQ(w.flags[j], src.flags[i]);
      EXPECT_EQ(w.tcp_flags[j], src.tcp_flags[i]);
      EXPECT_EQ(w.l3_offset[j], src.l3_offset[i]);
      EXPECT_EQ(w.l4_offset[j], src.l4_offset[i]);
      EXPECT_EQ(w.l4_len[j], src.l4_len[i]);
      EXPECT_EQ(lay.arrival(s)[j], paced ? arrival[i] : want_arrival[j]);
    }
    EXPECT_EQ(SlabLayout::header(s).opened_ns, paced ? arrival[idx[0]] : 42u);
  }
}

TEST(SlabRing, TwoThreadsSleepWakeAndExactOrder) {
  const RingConfig cfg{8, 1 << 14};
  Mem mem(SlabRing::required_bytes(cfg));
  auto ring = SlabRing::create(mem.span(), cfg);
  SlabLayout lay(16, cfg.slab_bytes);
  constexpr std::uint64_t kBatches = 20000;
  PacketBatch src = make_batch(16, 64, 0);
  std::vector<std::uint32_t> idx(16);
  std::iota(idx.begin(), idx.end(), 0u);
  std::thread worker([&] {
    auto peer = SlabRing::attach(mem.span());
    std::uint64_t seen = 0;
    while (seen < kBatches) {
      if (!peer.wait_input(50'000'000, 100)) continue;
      std::byte* s = peer.slab(peer.work_cursor());
      PacketBatch b = lay.wrap(s, std::make_shared<int>(0));
      for (std::size_t i = 0; i < b.size(); ++i) b.port[i] = static_cast<std::uint16_t>(b.packet_id[i] & 0xFFFF);
      peer.commit_done();
      ++seen;
    }
  });
  std::uint64_t filled = 0, released = 0, next_id = 0;
  while (released < kBatches) {
    if (filled < kBatches && ring.can_fill()) {
      std::byte* s = ring.slab(ring.fill_cursor());
      lay.reset(s);
      for (std::size_t i = 0; i < 16; ++i) src.packet_id[i] = filled * 16 + i;
      ASSERT_EQ(lay.append(s, src, idx.data(), 16, filled), 16u);
      ring.commit_fill();
      ++filled;
      continue;
    }
    if (!ring.wait_output(50'000'000, 100)) continue;
    std::byte* s = ring.slab(ring.release_cursor());
    PacketBatch out = lay.wrap(s, std::make_shared<int>(0));
    for (std::size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(out.packet_id[i], next_id);
      ASSERT_EQ(out.port[i], static_cast<std::uint16_t>(next_id & 0xFFFF));
      ++next_id;
    }
    ring.commit_release();
    ++released;
  }
  worker.join();
  EXPECT_EQ(next_id, kBatches * 16);
}

TEST(SlabRing, StopWakesASleepingWorker) {
  const RingConfig cfg{2, 4096};
  Mem mem(SlabRing::required_bytes(cfg));
  auto ring = SlabRing::create(mem.span(), cfg);
  std::thread worker([&] {
    auto peer = SlabRing::attach(mem.span());
    while (!peer.stopped()) (void)peer.wait_input(10'000'000'000ull, 10);  // 10 s: only a wake ends it early
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto t0 = std::chrono::steady_clock::now();
  ring.request_stop();
  worker.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
}
