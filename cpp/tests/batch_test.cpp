#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "vnfkit/packet/batch.hpp"

using vnfkit::packet::PacketBatch;

TEST(PacketBatch, AppendKeepsOffsetsAndColumnsConsistent) {
  PacketBatch b;
  b.clear();
  const std::uint8_t a[] = {1, 2, 3};
  const std::uint8_t c[] = {9};
  b.append(a, 10);
  b.append(c, 20);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b.offsets[1], 3u);
  EXPECT_EQ(b.packet(1).size(), 1u);
  EXPECT_EQ(b.packet(1)[0], 9);
  EXPECT_EQ(b.ts_ns[1], 20u);
  EXPECT_NO_THROW(b.validate());
  b.port.pop_back();
  EXPECT_THROW(b.validate(), std::invalid_argument);
}

TEST(FlowKey, ReversedSwapsEndpoints) {
  auto k = vnfkit::flow::make_v4_key(0x0a000001, 0x08080808, 1234, 53, 17);
  auto r = k.reversed();
  EXPECT_EQ(r.src_v4(), 0x08080808u);
  EXPECT_EQ(r.dport, 1234);
  EXPECT_EQ(r.reversed(), k);
}

TEST(Buffer, LargeZeroResizeLeavesFreshPagesUntouchedAndKeepsContents) {
  // A heap block filled with junk and freed first: a zeroed column must not reuse it as it is.
  { std::vector<std::uint64_t> junk(1u << 21, ~std::uint64_t{0}); }
  vnfkit::packet::Buffer<std::uint64_t> b;
  b.resize(3);
  b[0] = 7;
  b[2] = 9;
  const std::size_t n = std::size_t{1} << 22;  // 32 MiB: mapped zeroed, not filled
  b.resize(n);
  ASSERT_EQ(b.size(), n);
  EXPECT_EQ(b[0], 7u);
  EXPECT_EQ(b[1], 0u);
  EXPECT_EQ(b[2], 9u);
  // The pages past the first were never written, so the kernel has not even made them resident.
  const long page = ::sysconf(_SC_PAGESIZE);
  auto* base = reinterpret_cast<std::uint8_t*>(b.data());
  auto* first = reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(base) + (4u << 20)) &
                                                ~static_cast<std::uintptr_t>(page - 1));
  const std::size_t len = 16u << 20;
  std::vector<unsigned char> resident(len / static_cast<std::size_t>(page));
  ASSERT_EQ(::mincore(first, len, resident.data()), 0);
  EXPECT_EQ(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }), 0);
  // ... and read as zero.
  for (std::size_t i = 3; i < n; i += 4099) ASSERT_EQ(b[i], 0u) << i;
  EXPECT_EQ(b[n - 1], 0u);
  // Growing again keeps everything and zeroes only the new part.
  b[n - 1] = 5;
  b.resize(n + 10);
  EXPECT_EQ(b[0], 7u);
  EXPECT_EQ(b[n - 1], 5u);
  EXPECT_EQ(b[n + 9], 0u);
}

TEST(Buffer, LargeZeroResizeOfAStructWithNonZeroDefaultsFillsIt) {
  struct Ones {
    std::uint32_t v = 1;
  };
  vnfkit::packet::Buffer<Ones> b;
  b.resize(std::size_t{2} << 20);  // 8 MiB
  EXPECT_EQ(b[0].v, 1u);
  EXPECT_EQ(b[(std::size_t{2} << 20) - 1].v, 1u);
}

// The record is written with streaming stores for long pieces and ordinary stores for short ones
// and for unaligned heads and tails: every length around those cut points, at every destination
// alignment, gives the same bytes as the layout written out by hand, and nothing outside the record
// is touched.
TEST(InputRecord, SameBytesAtEveryLengthAndAlignment) {
  const std::size_t lengths[] = {0, 1, 15, 16, 63, 64, 200, 255, 256, 257, 300, 319, 320, 321, 1500, 9001};
  for (const std::size_t len : lengths) {
    for (const std::size_t packets : {std::size_t{1}, std::size_t{3}, std::size_t{40}}) {
      PacketBatch b;
      std::vector<std::uint8_t> data;
      for (std::size_t p = 0; p < packets; ++p) {
        std::vector<std::uint8_t> pkt(len + p);
        for (std::size_t i = 0; i < pkt.size(); ++i) pkt[i] = static_cast<std::uint8_t>(i * 7 + p * 31 + 1);
        data.insert(data.end(), pkt.begin(), pkt.end());
        b.append(pkt, 1000 + p);
      }
      vnfkit::packet::assign_ids(b, 77);
      std::vector<std::uint8_t> want(4, 0);
      std::memcpy(want.data(), "VKIB", 4);
      const auto put32 = [&want](std::uint32_t v) {
        for (int k = 0; k < 4; ++k) want.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
      };
      const auto put64 = [&want](std::uint64_t v) {
        for (int k = 0; k < 8; ++k) want.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
      };
      put32(static_cast<std::uint32_t>(packets));
      put32(static_cast<std::uint32_t>(data.size()));
      for (const auto o : b.offsets) put32(o);
      for (std::size_t p = 0; p < packets; ++p) put64(1000 + p);
      for (std::size_t p = 0; p < packets; ++p) put64(77 + p);
      want.insert(want.end(), data.begin(), data.end());
      ASSERT_EQ(vnfkit::packet::input_record_bytes(b), want.size());
      for (std::size_t shift = 0; shift < 16; ++shift) {
        std::vector<std::uint8_t> buf(want.size() + 64, 0xA5);
        vnfkit::packet::write_input_record(b, buf.data() + 16 + shift);
        ASSERT_TRUE(std::equal(want.begin(), want.end(), buf.begin() + 16 + static_cast<std::ptrdiff_t>(shift)))
            << "length " << len << ", packets " << packets << ", shift " << shift;
        ASSERT_TRUE(std::all_of(buf.begin(), buf.begin() + 16 + static_cast<std::ptrdiff_t>(shift),
                                [](std::uint8_t v) { return v == 0xA5; }));
        ASSERT_TRUE(std::all_of(buf.begin() + 16 + static_cast<std::ptrdiff_t>(shift + want.size()), buf.end(),
                                [](std::uint8_t v) { return v == 0xA5; }));
      }
    }
  }
}

TEST(InputRecord, LayoutIdsAndErrors) {
  PacketBatch b;
  const std::uint8_t a[3] = {1, 2, 3}, c[2] = {9, 8};
  b.append(a, 100);
  b.append(c, 200);
  vnfkit::packet::assign_ids(b, 40);
  EXPECT_EQ(b.packet_id[0], 40u);
  EXPECT_EQ(b.packet_id[1], 41u);
  const std::size_t size = vnfkit::packet::input_record_bytes(b);
  ASSERT_EQ(size, 12u + 4 * 3 + 16 * 2 + 5);
  std::vector<std::uint8_t> rec(size);
  vnfkit::packet::write_input_record(b, rec.data());
  EXPECT_EQ(std::string(rec.begin(), rec.begin() + 4), "VKIB");
  std::uint32_t head[2];
  std::memcpy(head, rec.data() + 4, 8);
  EXPECT_EQ(head[0], 2u);
  EXPECT_EQ(head[1], 5u);
  std::uint32_t offs[3];
  std::memcpy(offs, rec.data() + 12, 12);
  EXPECT_EQ(offs[2], 5u);
  std::uint64_t ts[2], ids[2];
  std::memcpy(ts, rec.data() + 24, 16);
  std::memcpy(ids, rec.data() + 40, 16);
  EXPECT_EQ(ts[1], 200u);
  EXPECT_EQ(ids[1], 41u);
  EXPECT_EQ(std::vector<std::uint8_t>(rec.end() - 5, rec.end()), (std::vector<std::uint8_t>{1, 2, 3, 9, 8}));
  // ids that would wrap are refused, and nothing is written
  EXPECT_THROW(vnfkit::packet::assign_ids(b, ~std::uint64_t{0}), std::invalid_argument);
  EXPECT_EQ(b.packet_id[0], 40u);
  b.offsets[1] = 9;  // offsets no longer non-decreasing
  EXPECT_THROW((void)vnfkit::packet::input_record_bytes(b), std::invalid_argument);
}
