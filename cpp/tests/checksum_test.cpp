#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "vnfkit/packet/build.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/parse.hpp"
#include "vnfkit/packet/rewrite.hpp"

using namespace vnfkit::packet;

TEST(Checksum, Rfc1071Example) {
  // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
  const std::uint8_t d[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(fold(sum_bytes(d, 8)), 0xddf2);
}

TEST(Checksum, KnownIpv4Header) {
  // A classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
  const std::uint8_t h[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                              0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(ipv4_header_checksum(h), 0xb861);
}

TEST(Checksum, IncrementalEqualsFull) {
  std::mt19937 mt(7);
  auto rng = [&mt] { return static_cast<std::uint32_t>(mt()); };
  for (int t = 0; t < 100000; ++t) {
    std::uint8_t buf[20];
    for (auto& x : buf) x = static_cast<std::uint8_t>(rng());
    buf[10] = buf[11] = 0;
    const std::uint16_t hc = ipv4_header_checksum(buf);
    buf[10] = static_cast<std::uint8_t>(hc >> 8);
    buf[11] = static_cast<std::uint8_t>(hc);
    const std::uint32_t old = (std::uint32_t{buf[12]} << 24) | (std::uint32_t{buf[13]} << 16) |
                              (std::uint32_t{buf[14]} << 8) | buf[15];
    const std::uint32_t nv = static_cast<std::uint32_t>(rng());
    buf[12] = static_cast<std::uint8_t>(nv >> 24);
    buf[13] = static_cast<std::uint8_t>(nv >> 16);
    buf[14] = static_cast<std::uint8_t>(nv >> 8);
    buf[15] = static_cast<std::uint8_t>(nv);
    ASSERT_EQ(checksum_update32(hc, old, nv), ipv4_header_checksum(buf));
  }
}

TEST(Checksum, RewriteKeepsEveryChecksumValid) {
  std::mt19937 mt(3);
  auto rng = [&mt] { return static_cast<std::uint32_t>(mt()); };
  const int n = 3000;
  std::vector<vnfkit::flow::FlowKey> keys(n);
  std::vector<std::uint16_t> sizes(n);
  std::vector<std::uint64_t> ts(n);
  std::vector<std::uint8_t> tf(n);
  std::vector<std::uint32_t> seq(n);
  const std::uint8_t protos[3] = {6, 17, 1};
  for (int i = 0; i < n; ++i) {
    keys[i] = vnfkit::flow::make_v4_key(rng(), rng(), static_cast<std::uint16_t>(rng()),
                                        static_cast<std::uint16_t>(rng()), protos[i % 3]);
    sizes[i] = static_cast<std::uint16_t>(60 + rng() % 200);
    tf[i] = 0x10;
    seq[i] = rng();
  }
  PacketBatch b = build_packets(keys.data(), sizes.data(), ts.data(), tf.data(), seq.data(), n);
  ASSERT_EQ(parse_batch(b), 0u);
  std::vector<std::uint8_t> ok(n);
  verify_checksums(b, ok.data());
  for (int i = 0; i < n; ++i) ASSERT_EQ(ok[i], 1) << i;
  std::vector<std::uint32_t> idx(n), addr(n);
  std::vector<std::uint16_t> port(n);
  for (int i = 0; i < n; ++i) {
    idx[i] = static_cast<std::uint32_t>(i);
    addr[i] = rng();
    port[i] = static_cast<std::uint16_t>(rng());
  }
  EXPECT_EQ(rewrite_v4(b, Side::kSource, idx.data(), addr.data(), port.data(), n), static_cast<std::size_t>(n));
  EXPECT_EQ(rewrite_v4(b, Side::kDestination, idx.data(), addr.data(), port.data(), n), static_cast<std::size_t>(n));
  verify_checksums(b, ok.data());
  for (int i = 0; i < n; ++i) ASSERT_EQ(ok[i], 1) << i;
  // The key column matches a fresh parse, and full recompute changes nothing.
  auto keys_after = b.key;
  const auto bytes_after = b.data;
  ASSERT_EQ(parse_batch(b), 0u);
  for (int i = 0; i < n; ++i) ASSERT_EQ(b.key[i], keys_after[i]) << i;
  fix_checksums(b);
  EXPECT_EQ(b.data, bytes_after);
  std::uint32_t bad_index = static_cast<std::uint32_t>(n);
  EXPECT_THROW(rewrite_v4(b, Side::kSource, &bad_index, addr.data(), port.data(), 1), std::invalid_argument);
}

TEST(Checksum, TamperedColumnsAreNeverFollowedOutOfBounds) {
  std::mt19937 mt(11);
  auto rng = [&mt] { return static_cast<std::uint32_t>(mt()); };
  const int n = 64;
  std::vector<vnfkit::flow::FlowKey> keys(n);
  std::vector<std::uint16_t> sizes(n, 64);
  std::vector<std::uint64_t> ts(n);
  std::vector<std::uint8_t> tf(n, 0x10);
  std::vector<std::uint32_t> seq(n);
  const std::uint8_t protos[4] = {6, 17, 1, 58};
  for (int i = 0; i < n; ++i) {
    keys[i] = vnfkit::flow::make_v4_key(rng(), rng(), 1, 2, protos[i % 3]);
    if (i % 4 == 3) {
      keys[i].family = 6;
      keys[i].proto = protos[rng() % 4 == 0 ? 3 : rng() % 2];
    }
  }
  std::vector<std::uint32_t> idx(n), addr(n);
  std::vector<std::uint16_t> port(n);
  for (int i = 0; i < n; ++i) idx[i] = static_cast<std::uint32_t>(i);
  for (int round = 0; round < 300; ++round) {
    PacketBatch b = build_packets(keys.data(), sizes.data(), ts.data(), tf.data(), seq.data(), n);
    for (int i = 0; i < n; ++i) {
      switch (rng() % 6) {
        case 0: b.l3_offset[i] = static_cast<std::uint16_t>(rng()); break;
        case 1: b.l4_offset[i] = static_cast<std::uint16_t>(rng() % 128); break;
        case 2: b.l4_len[i] = static_cast<std::uint16_t>(rng()); break;
        case 3: b.data[b.offsets[i] + 14] = static_cast<std::uint8_t>(rng()); break;  // IHL / version
        case 4: b.key[i].proto = static_cast<std::uint8_t>(rng()); b.flags[i] = kFlagHasL4; break;
        default: b.key[i].family = static_cast<std::uint8_t>(rng() % 8); break;
      }
    }
    std::vector<std::uint8_t> ok(n);
    verify_checksums(b, ok.data());  // under ASan: any overread aborts the test
    fix_checksums(b);
    rewrite_v4(b, Side::kSource, idx.data(), addr.data(), port.data(), n);
    rewrite_v4(b, Side::kDestination, idx.data(), addr.data(), port.data(), n);
  }
}
