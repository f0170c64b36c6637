// Toeplitz (Microsoft RSS) hash, table driven.
//
// The Toeplitz hash of an input of L bytes under a key K (at least L + 4 bytes) is the XOR, over
// every input bit i that is set (bit 0 = most significant bit of input byte 0), of the 32-bit window
// of K starting at bit i. It is linear over GF(2): for one key and one input length,
// h(x ^ y) == h(x) ^ h(y). We precompute, for every input byte position p and byte value v, the
// 32-bit contribution of v at p (36 x 256 uint32 = 36 KiB; an IPv4 5-tuple touches 12 KiB of it),
// so a hash is one table lookup and one XOR per input byte instead of DPDK rte_softrss's loop over
// bits.
//
// Inputs (all network byte order, as NICs hash them):
//   IPv4          src | dst                    8 bytes
//   IPv4 + ports  src | dst | sport | dport   12 bytes
//   IPv6          src | dst                   32 bytes
//   IPv6 + ports  src | dst | sport | dport   36 bytes
//
// Symmetric mode (hash(a->b) == hash(b->a) for EVERY key): before hashing, the two endpoints
// (address, port) are put in canonical order: the endpoint whose address bytes are smaller
// (memcmp, i.e. numerically smaller address), ties broken by the smaller port, becomes "src".
// This differs from the NIC trick of a repeating 16-bit key (0x6d5a6d5a...), which only makes the
// hash symmetric for that special key and weakens it; ours keeps any key, but its values are
// therefore not what a NIC computes in its own symmetric mode.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vnfkit/flow/flow_key.hpp"

namespace vnfkit::classify {

// The default RSS key of the Microsoft RSS specification (also Intel's and DPDK's default).
inline constexpr std::array<std::uint8_t, 40> kMicrosoftRssKey = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

inline constexpr std::size_t kMaxHashInput = 36;  // IPv6 + ports
inline constexpr std::size_t kMinKeyLen = kMaxHashInput + 4;
inline constexpr std::size_t kMaxKeyLen = 64;

// Input byte positions of the ports in an IPv4 / IPv6 hash input.
inline constexpr std::size_t kV4PortOffset = 8;
inline constexpr std::size_t kV6PortOffset = 32;

// Bit-serial Toeplitz over any key at least input.size() + 4 bytes long (throws
// std::invalid_argument otherwise). The straightforward reference (like DPDK's rte_softrss); slow.
std::uint32_t toeplitz_hash_bitserial(std::span<const std::uint8_t> key,
                                      std::span<const std::uint8_t> input);

// Bit-serial IPv4 batch hash (host-order inputs), the benchmark's C++ baseline.
void toeplitz_hash_v4_bitserial(std::span<const std::uint8_t> key, const std::uint32_t* src,
                                const std::uint32_t* dst, const std::uint16_t* sport,
                                const std::uint16_t* dport, std::size_t n, bool ports,
                                std::uint32_t* out);

class Toeplitz {
 public:
  // key: 40..64 bytes (40 covers the longest input, IPv6 + ports); throws std::invalid_argument.
  explicit Toeplitz(std::span<const std::uint8_t> key = kMicrosoftRssKey);

  [[nodiscard]] std::span<const std::uint8_t> key() const noexcept { return {key_.data(), key_len_}; }

  // Any input of 0..36 bytes (throws std::invalid_argument if longer).
  [[nodiscard]] std::uint32_t hash(std::span<const std::uint8_t> input) const;

  // The contribution of byte value v at input position pos (pos < 36): h(x) = XOR of these.
  [[nodiscard]] std::uint32_t contribution(std::size_t pos, std::uint8_t v) const noexcept {
    return table_[pos][v];
  }
  // Contribution of a 16-bit big-endian field at input byte position pos (pos + 1 < 36).
  [[nodiscard]] std::uint32_t contribution16(std::size_t pos, std::uint16_t v) const noexcept {
    return table_[pos][v >> 8] ^ table_[pos + 1][v & 0xFFu];
  }

  // IPv4 from host-order values.
  [[nodiscard]] std::uint32_t hash_v4(std::uint32_t src, std::uint32_t dst, std::uint16_t sport,
                                      std::uint16_t dport, bool ports) const noexcept {
    std::uint32_t h = word(0, src) ^ word(4, dst);
    if (ports) h ^= contribution16(8, sport) ^ contribution16(10, dport);
    return h;
  }
  [[nodiscard]] std::uint32_t hash_v4_symmetric(std::uint32_t src, std::uint32_t dst,
                                                std::uint16_t sport, std::uint16_t dport,
                                                bool ports) const noexcept {
    const bool swap = src > dst || (src == dst && ports && sport > dport);
    return swap ? hash_v4(dst, src, dport, sport, ports) : hash_v4(src, dst, sport, dport, ports);
  }

  // A FlowKey (family 4 or 6; anything else hashes to 0). ports: include sport/dport.
  [[nodiscard]] std::uint32_t hash_key(const flow::FlowKey& k, bool ports) const noexcept;
  [[nodiscard]] std::uint32_t hash_key_symmetric(const flow::FlowKey& k, bool ports) const noexcept;

  // Whether hash_v4_batch uses the AVX-512 + GFNI kernel (chosen at run time when the CPU has
  // avx512f/bw/vbmi and gfni; results are identical to the table path). Disabling is for tests and
  // benchmarks; enabling has no effect on a CPU without the features.
  [[nodiscard]] bool simd_enabled() const noexcept { return simd_; }
  void set_simd_enabled(bool on) noexcept;
  [[nodiscard]] static bool simd_supported() noexcept;

  // Batches. Arrays must not overlap `out`. Host-order IPv4 inputs.
  void hash_v4_batch(const std::uint32_t* src, const std::uint32_t* dst, const std::uint16_t* sport,
                     const std::uint16_t* dport, std::size_t n, bool ports, bool symmetric,
                     std::uint32_t* out) const noexcept;
  void hash_keys(std::span<const flow::FlowKey> keys, bool ports, bool symmetric,
                 std::uint32_t* out) const noexcept;

 private:
  [[nodiscard]] std::uint32_t word(std::size_t pos, std::uint32_t v) const noexcept {
    return table_[pos][v >> 24] ^ table_[pos + 1][(v >> 16) & 0xFFu] ^
           table_[pos + 2][(v >> 8) & 0xFFu] ^ table_[pos + 3][v & 0xFFu];
  }
  [[nodiscard]] std::uint32_t hash_v6(const std::uint8_t* src, const std::uint8_t* dst,
                                      std::uint16_t sport, std::uint16_t dport,
                                      bool ports) const noexcept;

  std::array<std::uint8_t, kMaxKeyLen> key_{};
  std::size_t key_len_ = 0;
  alignas(64) std::array<std::array<std::uint32_t, 256>, kMaxHashInput> table_{};
  alignas(64) std::array<std::uint64_t, 96> gfni_mat_{};  // see toeplitz_gfni.hpp
  bool simd_ = false;
};

}  // namespace vnfkit::classify
