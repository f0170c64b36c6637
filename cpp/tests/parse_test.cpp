#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "vnfkit/packet/build.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/parse.hpp"

using namespace vnfkit::packet;
using vnfkit::flow::FlowKey;

namespace {

std::vector<std::uint8_t> eth_ipv4_tcp() {
  std::vector<std::uint8_t> p(54, 0);
  p[12] = 0x08;
  p[14] = 0x45;
  p[16] = 0;
  p[17] = 40;
  p[23] = 6;
  const std::uint8_t src[4] = {10, 0, 0, 1}, dst[4] = {192, 168, 1, 2};
  std::memcpy(&p[26], src, 4);
  std::memcpy(&p[30], dst, 4);
  p[34] = 0x04; p[35] = 0xD2;  // 1234
  p[36] = 0x00; p[37] = 0x50;  // 80
  p[46] = 0x50;
  p[47] = 0x12;  // SYN|ACK
  return p;
}

PacketBatch one(const std::vector<std::uint8_t>& p) {
  PacketBatch b;
  b.clear();
  b.append(p, 0);
  return b;
}

}  // namespace

TEST(Parse, Ipv4Tcp) {
  auto b = one(eth_ipv4_tcp());
  EXPECT_EQ(parse_batch(b), 0u);
  EXPECT_EQ(b.key[0], vnfkit::flow::make_v4_key(0x0a000001, 0xc0a80102, 1234, 80, 6));
  EXPECT_EQ(b.tcp_flags[0], 0x12);
  EXPECT_EQ(b.flags[0], kFlagHasL4);
  EXPECT_EQ(b.l3_offset[0], 14);
  EXPECT_EQ(b.l4_offset[0], 34);
  EXPECT_EQ(b.l4_len[0], 20);
}

TEST(Parse, EthernetPaddingIsFine) {
  auto p = eth_ipv4_tcp();
  p.resize(60, 0);
  auto b = one(p);
  EXPECT_EQ(parse_batch(b), 0u);
  EXPECT_EQ(b.l4_len[0], 20);
}

TEST(Parse, BadCases) {
  struct Case { std::size_t byte; std::uint8_t value; DropReason why; };
  const Case cases[] = {
      {12, 0x08, DropReason::kNone},
      {13, 0x06, DropReason::kBadEthertype},     // ARP
      {14, 0x44, DropReason::kBadIhl},           // IHL 4
      {14, 0x4F, DropReason::kBadIhl},           // IHL 15 > packet
      {14, 0x65, DropReason::kBadIpVersion},
      {17, 200, DropReason::kBadIpLength},       // total length > frame
      {17, 19, DropReason::kBadIpLength},        // total length < IHL
      {46, 0x40, DropReason::kBadL4Header},      // TCP data offset 4
      {46, 0xF0, DropReason::kBadL4Header},      // TCP data offset 15 > segment
  };
  for (const auto& c : cases) {
    auto p = eth_ipv4_tcp();
    p[c.byte] = c.value;
    auto b = one(p);
    b.port[0] = 5;
    const std::size_t bad = parse_batch(b);
    EXPECT_EQ(b.drop[0], static_cast<std::uint8_t>(c.why)) << "byte " << c.byte;
    EXPECT_EQ(bad, c.why == DropReason::kNone ? 0u : 1u);
    if (c.why != DropReason::kNone) {
      EXPECT_EQ(b.port[0], 0);
      EXPECT_EQ(b.key[0], FlowKey{});
    }
  }
}

TEST(Parse, EveryTruncationIsDroppedNotOverread) {
  const auto full = eth_ipv4_tcp();
  for (std::size_t n = 0; n < full.size(); ++n) {
    // Copy into an exactly sized heap buffer so ASan catches any overread.
    std::vector<std::uint8_t> p(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    auto b = one(p);
    EXPECT_EQ(parse_batch(b), 1u) << n;
    EXPECT_NE(b.drop[0], 0) << n;
  }
}

TEST(Parse, RandomBytesFuzz) {
  std::mt19937_64 rng(12345);
  // Mostly-valid prefixes with random mutations and truncations, plus pure noise.
  FlowKey keys[4] = {vnfkit::flow::make_v4_key(1, 2, 3, 4, 6), vnfkit::flow::make_v4_key(1, 2, 3, 4, 17),
                     vnfkit::flow::make_v4_key(1, 2, 3, 4, 1), {}};
  keys[3].family = 6;
  keys[3].proto = 58;
  const std::uint16_t sizes[4] = {64, 64, 64, 90};
  const std::uint64_t ts[4] = {};
  const std::uint8_t tf[4] = {2, 0, 0, 0};
  const std::uint32_t seq[4] = {};
  const PacketBatch seeds = build_packets(keys, sizes, ts, tf, seq, 4);
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::uint8_t> p;
    if (round % 4 == 0) {
      p.resize(rng() % 120);
      for (auto& x : p) x = static_cast<std::uint8_t>(rng());
      if (p.size() > 13 && (rng() & 1)) { p[12] = 0x86; p[13] = 0xDD; }
    } else {
      auto s = seeds.packet(rng() % 4);
      p.assign(s.begin(), s.end());
      const int muts = static_cast<int>(rng() % 4);
      for (int k = 0; k < muts; ++k) p[rng() % p.size()] = static_cast<std::uint8_t>(rng());
      if (p.size() > 54 && (rng() % 8) == 0) {  // IPv6 extension header soup
        p[20] = static_cast<std::uint8_t>(std::array<int, 5>{0, 43, 44, 60, 51}[rng() % 5]);
      }
      p.resize(rng() % (p.size() + 1));
    }
    auto b = one(p);
    const std::size_t bad = parse_batch(b);
    ASSERT_EQ(bad, b.drop[0] != 0 ? 1u : 0u);
    if (b.drop[0] == 0) {
      ASSERT_TRUE(b.key[0].family == 4 || b.key[0].family == 6);
      ASSERT_LE(static_cast<std::size_t>(b.l4_offset[0]) + b.l4_len[0], p.size());
      ASSERT_LT(b.l3_offset[0], b.l4_offset[0]);
      std::uint8_t ok = 0;
      verify_checksums(b, &ok);  // must not overread either
      fix_checksums(b);
    } else {
      ASSERT_EQ(b.key[0], FlowKey{});
      ASSERT_EQ(b.flags[0] & kFlagHasL4, 0);
    }
  }
}

TEST(Parse, SelectGathersColumns) {
  FlowKey keys[3] = {vnfkit::flow::make_v4_key(1, 2, 3, 4, 6), vnfkit::flow::make_v4_key(5, 6, 7, 8, 17),
                     vnfkit::flow::make_v4_key(9, 9, 9, 9, 6)};
  const std::uint16_t sizes[3] = {64, 70, 80};
  const std::uint64_t ts[3] = {1, 2, 3};
  const std::uint8_t tf[3] = {2, 0, 0x10};
  const std::uint32_t seq[3] = {};
  PacketBatch b = build_packets(keys, sizes, ts, tf, seq, 3);
  const std::uint32_t idx[3] = {2, 0, 2};
  PacketBatch s = select(b, idx, 3);
  EXPECT_NO_THROW(s.validate());
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s.packet(0).size(), 80u);
  EXPECT_EQ(s.ts_ns[1], 1u);
  EXPECT_EQ(s.key[2], keys[2]);
  const std::uint32_t badidx[1] = {3};
  EXPECT_THROW(select(b, badidx, 1), std::invalid_argument);
}
