#include "vnfkit/classify/toeplitz.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "toeplitz_gfni.hpp"

namespace vnfkit::classify {

namespace {

// Bit `i` of the key as a bit string (bit 0 = MSB of key[0]); 0 past the end.
inline std::uint32_t key_bit(std::span<const std::uint8_t> key, std::size_t i) noexcept {
  const std::size_t byte = i / 8;
  if (byte >= key.size()) return 0;
  return (key[byte] >> (7 - i % 8)) & 1u;
}

// The 32-bit window of the key starting at bit i.
std::uint32_t key_window(std::span<const std::uint8_t> key, std::size_t i) noexcept {
  std::uint32_t w = 0;
  for (std::size_t b = 0; b < 32; ++b) w = (w << 1) | key_bit(key, i + b);
  return w;
}

}  // namespace

std::uint32_t toeplitz_hash_bitserial(std::span<const std::uint8_t> key,
                                      std::span<const std::uint8_t> input) {
  if (key.size() < input.size() + 4) {
    throw std::invalid_argument("key: a Toeplitz key must be at least input length + 4 bytes (" +
                                std::to_string(input.size() + 4) + " for this " +
                                std::to_string(input.size()) + "-byte input), got " +
                                std::to_string(key.size()));
  }
  // Slide a 32-bit window over the key one bit at a time (as rte_softrss does).
  std::uint32_t h = 0;
  std::uint32_t window = (std::uint32_t{key[0]} << 24) | (std::uint32_t{key[1]} << 16) |
                         (std::uint32_t{key[2]} << 8) | std::uint32_t{key[3]};
  for (std::size_t byte = 0; byte < input.size(); ++byte) {
    const std::uint8_t next = key[byte + 4];  // in range: key.size() >= input.size() + 4
    for (int bit = 7; bit >= 0; --bit) {
      if ((input[byte] >> bit) & 1u) h ^= window;
      window = (window << 1) | ((next >> bit) & 1u);
    }
  }
  return h;
}

void toeplitz_hash_v4_bitserial(std::span<const std::uint8_t> key, const std::uint32_t* src,
                                const std::uint32_t* dst, const std::uint16_t* sport,
                                const std::uint16_t* dport, std::size_t n, bool ports,
                                std::uint32_t* out) {
  const std::size_t len = ports ? 12 : 8;
  if (key.size() < len + 4) {
    throw std::invalid_argument("key: too short for the IPv4 input");
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::array<std::uint8_t, 12> in{};
    for (int b = 0; b < 4; ++b) {
      in[b] = static_cast<std::uint8_t>(src[i] >> (24 - 8 * b));
      in[4 + b] = static_cast<std::uint8_t>(dst[i] >> (24 - 8 * b));
    }
    in[8] = static_cast<std::uint8_t>(sport[i] >> 8);
    in[9] = static_cast<std::uint8_t>(sport[i]);
    in[10] = static_cast<std::uint8_t>(dport[i] >> 8);
    in[11] = static_cast<std::uint8_t>(dport[i]);
    out[i] = toeplitz_hash_bitserial(key, std::span<const std::uint8_t>(in.data(), len));
  }
}

Toeplitz::Toeplitz(std::span<const std::uint8_t> key) {
  if (key.size() < kMinKeyLen || key.size() > kMaxKeyLen) {
    throw std::invalid_argument("key: an RSS key must be " + std::to_string(kMinKeyLen) + ".." +
                                std::to_string(kMaxKeyLen) +
                                " bytes (the longest input, IPv6 + ports, is 36 bytes and needs "
                                "input length + 4), got " +
                                std::to_string(key.size()));
  }
  std::memcpy(key_.data(), key.data(), key.size());
  key_len_ = key.size();
  for (std::size_t pos = 0; pos < kMaxHashInput; ++pos) {
    std::array<std::uint32_t, 8> bit_window{};  // window for bit 7..0 of this byte
    for (int bit = 0; bit < 8; ++bit) bit_window[bit] = key_window(key, pos * 8 + (7 - bit));
    for (std::uint32_t v = 0; v < 256; ++v) {
      std::uint32_t h = 0;
      for (int bit = 0; bit < 8; ++bit) {
        if ((v >> bit) & 1u) h ^= bit_window[bit];
      }
      table_[pos][v] = h;
    }
  }
  // GF(2) matrices for the GFNI kernel: row i (byte 7 - i of the qword) of M(p, o) has bit k set
  // iff input bit k of byte p flips output bit i of hash byte o.
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t o = 0; o < 4; ++o) {
      for (std::size_t g = 0; g < 4; ++g) {
        const std::size_t p = 4 * r + g;
        std::uint64_t mat = 0;
        for (unsigned i = 0; i < 8; ++i) {
          std::uint64_t row = 0;
          for (unsigned k = 0; k < 8; ++k) {
            row |= std::uint64_t{(table_[p][1u << k] >> (24 - 8 * o + i)) & 1u} << k;
          }
          mat |= row << (8 * (7 - i));
        }
        gfni_mat_[(r * 4 + o) * 8 + 2 * g] = mat;
        gfni_mat_[(r * 4 + o) * 8 + 2 * g + 1] = mat;
      }
    }
  }
  simd_ = simd_supported();
}

bool Toeplitz::simd_supported() noexcept {
  static const bool supported = detail::gfni_supported();
  return supported;
}

void Toeplitz::set_simd_enabled(bool on) noexcept { simd_ = on && simd_supported(); }

std::uint32_t Toeplitz::hash(std::span<const std::uint8_t> input) const {
  if (input.size() > kMaxHashInput) {
    throw std::invalid_argument("input: at most 36 bytes (IPv6 + ports), got " +
                                std::to_string(input.size()));
  }
  std::uint32_t h = 0;
  for (std::size_t i = 0; i < input.size(); ++i) h ^= table_[i][input[i]];
  return h;
}

std::uint32_t Toeplitz::hash_v6(const std::uint8_t* src, const std::uint8_t* dst,
                                std::uint16_t sport, std::uint16_t dport,
                                bool ports) const noexcept {
  std::uint32_t h = 0;
  for (std::size_t i = 0; i < 16; ++i) h ^= table_[i][src[i]] ^ table_[16 + i][dst[i]];
  if (ports) h ^= contribution16(32, sport) ^ contribution16(34, dport);
  return h;
}

std::uint32_t Toeplitz::hash_key(const flow::FlowKey& k, bool ports) const noexcept {
  if (k.family == 4) return hash_v4(k.src_v4(), k.dst_v4(), k.sport, k.dport, ports);
  if (k.family == 6) return hash_v6(k.src.data(), k.dst.data(), k.sport, k.dport, ports);
  return 0;
}

std::uint32_t Toeplitz::hash_key_symmetric(const flow::FlowKey& k, bool ports) const noexcept {
  if (k.family == 4) return hash_v4_symmetric(k.src_v4(), k.dst_v4(), k.sport, k.dport, ports);
  if (k.family == 6) {
    const int c = std::memcmp(k.src.data(), k.dst.data(), 16);
    const bool swap = c > 0 || (c == 0 && ports && k.sport > k.dport);
    return swap ? hash_v6(k.dst.data(), k.src.data(), k.dport, k.sport, ports)
                : hash_v6(k.src.data(), k.dst.data(), k.sport, k.dport, ports);
  }
  return 0;
}

void Toeplitz::hash_v4_batch(const std::uint32_t* src, const std::uint32_t* dst,
                             const std::uint16_t* sport, const std::uint16_t* dport, std::size_t n,
                             bool ports, bool symmetric, std::uint32_t* out) const noexcept {
  if (simd_) {
    const std::size_t done = detail::hash_v4_gfni(gfni_mat_.data(), src, dst, sport, dport, n, ports,
                                                  symmetric, out);
    src += done;
    dst += done;
    sport += done;
    dport += done;
    out += done;
    n -= done;
  }
  if (symmetric) {
    for (std::size_t i = 0; i < n; ++i) out[i] = hash_v4_symmetric(src[i], dst[i], sport[i], dport[i], ports);
  } else if (ports) {
    for (std::size_t i = 0; i < n; ++i) out[i] = hash_v4(src[i], dst[i], sport[i], dport[i], true);
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = word(0, src[i]) ^ word(4, dst[i]);
  }
}

void Toeplitz::hash_keys(std::span<const flow::FlowKey> keys, bool ports, bool symmetric,
                         std::uint32_t* out) const noexcept {
  if (symmetric) {
    for (std::size_t i = 0; i < keys.size(); ++i) out[i] = hash_key_symmetric(keys[i], ports);
  } else {
    for (std::size_t i = 0; i < keys.size(); ++i) out[i] = hash_key(keys[i], ports);
  }
}

}  // namespace vnfkit::classify
