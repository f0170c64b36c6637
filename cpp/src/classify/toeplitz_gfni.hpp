// Internal: the AVX-512/GFNI batch kernel of toeplitz.cpp (see toeplitz_gfni.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace vnfkit::classify::detail {

// `mats`: 96 qwords, 64-byte aligned; mats[(r * 4 + o) * 8 + q], with qwords q = 2g and 2g+1
// holding the 8x8 GF(2) matrix (vgf2p8affineqb layout) that maps input byte 4r + g to output
// byte o (o = 0 is the hash's most significant byte).
using GfniMatrices = std::uint64_t;

bool gfni_supported() noexcept;

// Hashes the first (n / 16) * 16 tuples; returns how many it did. Only call if gfni_supported().
std::size_t hash_v4_gfni(const GfniMatrices* m, const std::uint32_t* src, const std::uint32_t* dst,
                         const std::uint16_t* sport, const std::uint16_t* dport, std::size_t n, bool ports,
                         bool symmetric, std::uint32_t* out) noexcept;

}  // namespace vnfkit::classify::detail
