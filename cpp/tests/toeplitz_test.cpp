// Toeplitz: the Microsoft RSS verification vectors (embedded here; the same vectors are in
// tests/data/rss_vectors.json), table-driven vs bit-serial agreement, symmetry, linearity.
#include "vnfkit/classify/toeplitz.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

using vnfkit::classify::kMicrosoftRssKey;
using vnfkit::classify::Toeplitz;
using vnfkit::classify::toeplitz_hash_bitserial;
using vnfkit::flow::FlowKey;

namespace {

struct V4Vector {
  std::array<std::uint8_t, 4> src, dst;
  std::uint16_t sport, dport;
  std::uint32_t l3, l3l4;
};

const V4Vector kV4[] = {
    {{66, 9, 149, 187}, {161, 142, 100, 80}, 2794, 1766, 0x323e8fc2, 0x51ccc178},
    {{199, 92, 111, 2}, {65, 69, 140, 83}, 14230, 4739, 0xd718262a, 0xc626b0ea},
    {{24, 19, 198, 95}, {12, 22, 207, 184}, 12898, 38024, 0xd2d0a5de, 0x5c2b394a},
    {{38, 27, 205, 30}, {209, 142, 163, 6}, 48228, 2217, 0x82989176, 0xafc7327f},
    {{153, 39, 163, 191}, {202, 188, 127, 2}, 44251, 1303, 0x5d1809c5, 0x10e828a2},
};

struct V6Vector {
  std::array<std::uint8_t, 16> src, dst;
  std::uint16_t sport, dport;
  std::uint32_t l3, l3l4;
};

// 3ffe:2501:200:1fff::7 -> 3ffe:2501:200:3::1, etc.
const V6Vector kV6[] = {
    {{0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7},
     {0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1},
     2794, 1766, 0x2cc18cd5, 0x40207d3d},
    {{0x3f, 0xfe, 0x05, 0x01, 0x00, 0x08, 0, 0, 0x02, 0x60, 0x97, 0xff, 0xfe, 0x40, 0xef, 0xab},
     {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
     14230, 4739, 0x0f0c461c, 0xdde51bbf},
    {{0x3f, 0xfe, 0x19, 0x00, 0x45, 0x45, 0x00, 0x03, 0x02, 0x00, 0xf8, 0xff, 0xfe, 0x21, 0x67, 0xcf},
     {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0xf8, 0xff, 0xfe, 0x21, 0x67, 0xcf},
     44251, 38024, 0x4b61e985, 0x02d1feef},
};

std::uint32_t be32(const std::array<std::uint8_t, 4>& a) {
  return (std::uint32_t{a[0]} << 24) | (std::uint32_t{a[1]} << 16) | (std::uint32_t{a[2]} << 8) | a[3];
}

FlowKey v6_key(const V6Vector& v) {
  FlowKey k;
  k.src = v.src;
  k.dst = v.dst;
  k.sport = v.sport;
  k.dport = v.dport;
  k.proto = 6;
  k.family = 6;
  return k;
}

template <std::size_t N>
std::vector<std::uint8_t> input_of(const std::array<std::uint8_t, N>& s, const std::array<std::uint8_t, N>& d,
                                   std::uint16_t sp, std::uint16_t dp, bool ports) {
  // resize + memcpy (GCC 12 -O3 warns falsely on vector::insert of tiny ranges).
  std::vector<std::uint8_t> in(2 * N + (ports ? 4 : 0));
  std::memcpy(in.data(), s.data(), N);
  std::memcpy(in.data() + N, d.data(), N);
  if (ports) {
    const std::uint8_t p[4] = {static_cast<std::uint8_t>(sp >> 8), static_cast<std::uint8_t>(sp),
                               static_cast<std::uint8_t>(dp >> 8), static_cast<std::uint8_t>(dp)};
    std::memcpy(in.data() + 2 * N, p, 4);
  }
  return in;
}

}  // namespace

TEST(Toeplitz, MicrosoftVectorsIPv4) {
  const Toeplitz t;
  for (const auto& v : kV4) {
    const auto k = vnfkit::flow::make_v4_key(be32(v.src), be32(v.dst), v.sport, v.dport, 6);
    EXPECT_EQ(t.hash_key(k, false), v.l3);
    EXPECT_EQ(t.hash_key(k, true), v.l3l4);
    EXPECT_EQ(t.hash_v4(be32(v.src), be32(v.dst), v.sport, v.dport, true), v.l3l4);
    for (bool ports : {false, true}) {
      const auto in = input_of(v.src, v.dst, v.sport, v.dport, ports);
      const std::uint32_t want = ports ? v.l3l4 : v.l3;
      EXPECT_EQ(t.hash(in), want);
      EXPECT_EQ(toeplitz_hash_bitserial(kMicrosoftRssKey, in), want);
    }
  }
}

TEST(Toeplitz, MicrosoftVectorsIPv6) {
  const Toeplitz t;
  for (const auto& v : kV6) {
    const FlowKey k = v6_key(v);
    EXPECT_EQ(t.hash_key(k, false), v.l3);
    EXPECT_EQ(t.hash_key(k, true), v.l3l4);
    for (bool ports : {false, true}) {
      const auto in = input_of(v.src, v.dst, v.sport, v.dport, ports);
      const std::uint32_t want = ports ? v.l3l4 : v.l3;
      EXPECT_EQ(t.hash(in), want);
      EXPECT_EQ(toeplitz_hash_bitserial(kMicrosoftRssKey, in), want);
    }
  }
}

TEST(Toeplitz, TableAgreesWithBitSerialOnRandomKeysAndInputs) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::uint8_t> key(40 + rng() % 25);
    for (auto& b : key) b = static_cast<std::uint8_t>(rng());
    const Toeplitz t(key);
    for (int j = 0; j < 20; ++j) {
      std::vector<std::uint8_t> in(rng() % 37);
      for (auto& b : in) b = static_cast<std::uint8_t>(rng());
      EXPECT_EQ(t.hash(in), toeplitz_hash_bitserial(key, in));
    }
    // Batch API vs bit-serial batch API.
    constexpr std::size_t n = 33;
    std::vector<std::uint32_t> src(n), dst(n), a(n), b(n);
    std::vector<std::uint16_t> sp(n), dp(n);
    for (std::size_t i = 0; i < n; ++i) {
      src[i] = static_cast<std::uint32_t>(rng());
      dst[i] = static_cast<std::uint32_t>(rng());
      sp[i] = static_cast<std::uint16_t>(rng());
      dp[i] = static_cast<std::uint16_t>(rng());
    }
    for (bool ports : {false, true}) {
      t.hash_v4_batch(src.data(), dst.data(), sp.data(), dp.data(), n, ports, false, a.data());
      vnfkit::classify::toeplitz_hash_v4_bitserial(key, src.data(), dst.data(), sp.data(), dp.data(), n,
                                                   ports, b.data());
      EXPECT_EQ(a, b);
    }
  }
}

TEST(Toeplitz, SymmetricModeIsSymmetricAndLinearityHolds) {
  std::mt19937_64 rng(7);
  std::vector<std::uint8_t> key(52);
  for (auto& b : key) b = static_cast<std::uint8_t>(rng());
  const Toeplitz t(key);
  for (int i = 0; i < 1000; ++i) {
    FlowKey k;
    k.family = (i % 2) ? 4 : 6;
    const std::size_t alen = k.family == 4 ? 4 : 16;
    for (std::size_t j = 0; j < alen; ++j) {
      k.src[j] = static_cast<std::uint8_t>(rng());
      k.dst[j] = (i % 7 == 0) ? k.src[j] : static_cast<std::uint8_t>(rng());  // some equal addrs
    }
    k.sport = static_cast<std::uint16_t>(rng());
    k.dport = static_cast<std::uint16_t>(rng());
    for (bool ports : {false, true}) {
      EXPECT_EQ(t.hash_key_symmetric(k, ports), t.hash_key_symmetric(k.reversed(), ports));
      // Symmetric hash is the plain hash of one of the two directions.
      const std::uint32_t s = t.hash_key_symmetric(k, ports);
      EXPECT_TRUE(s == t.hash_key(k, ports) || s == t.hash_key(k.reversed(), ports));
    }
    // Linearity: h(x ^ y) == h(x) ^ h(y) for the same length.
    const std::uint32_t y = static_cast<std::uint32_t>(rng());
    const std::uint32_t x = k.src_v4();
    EXPECT_EQ(t.hash_v4(x ^ y, 0, 0, 0, true), t.hash_v4(x, 0, 0, 0, true) ^ t.hash_v4(y, 0, 0, 0, true));
  }
}

TEST(Toeplitz, RejectsBadKeysAndInputs) {
  std::vector<std::uint8_t> short_key(39), long_key(65);
  EXPECT_THROW(Toeplitz{short_key}, std::invalid_argument);
  EXPECT_THROW(Toeplitz{long_key}, std::invalid_argument);
  const Toeplitz t;
  std::vector<std::uint8_t> in(37);
  EXPECT_THROW((void)t.hash(in), std::invalid_argument);
  std::vector<std::uint8_t> key(15), in12(12);
  EXPECT_THROW((void)toeplitz_hash_bitserial(key, in12), std::invalid_argument);
  key.resize(16);
  EXPECT_NO_THROW((void)toeplitz_hash_bitserial(key, in12));
  FlowKey none;
  EXPECT_EQ(t.hash_key(none, true), 0u);
}

TEST(Toeplitz, SimdKernelMatchesTablePathOnEveryLength) {
  if (!Toeplitz::simd_supported()) GTEST_SKIP() << "CPU lacks avx512f/bw/vbmi + gfni";
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::uint8_t> key(40 + rng() % 25);
    for (auto& b : key) b = static_cast<std::uint8_t>(rng());
    Toeplitz simd(key);
    Toeplitz table(key);
    table.set_simd_enabled(false);
    ASSERT_TRUE(simd.simd_enabled());
    ASSERT_FALSE(table.simd_enabled());
    const std::size_t n = rng() % 100;
    std::vector<std::uint32_t> src(n), dst(n), a(n), b(n);
    std::vector<std::uint16_t> sp(n), dp(n);
    for (std::size_t i = 0; i < n; ++i) {
      src[i] = static_cast<std::uint32_t>(rng());
      dst[i] = (i % 5 == 0) ? src[i] : static_cast<std::uint32_t>(rng());  // ties for symmetric
      sp[i] = static_cast<std::uint16_t>(rng());
      dp[i] = static_cast<std::uint16_t>(rng());
    }
    for (bool ports : {false, true}) {
      for (bool sym : {false, true}) {
        simd.hash_v4_batch(src.data(), dst.data(), sp.data(), dp.data(), n, ports, sym, a.data());
        table.hash_v4_batch(src.data(), dst.data(), sp.data(), dp.data(), n, ports, sym, b.data());
        EXPECT_EQ(a, b) << "ports=" << ports << " symmetric=" << sym << " n=" << n;
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint32_t want = sym ? table.hash_v4_symmetric(src[i], dst[i], sp[i], dp[i], ports)
                                         : table.hash_v4(src[i], dst[i], sp[i], dp[i], ports);
          ASSERT_EQ(a[i], want);
        }
      }
    }
  }
}
