// AVX-512 + GFNI kernel for the batch IPv4 Toeplitz hash, selected at run time (no -march flags:
// the functions carry a target attribute and run only if the CPU reports the features).
//
// The hash is linear over GF(2), so output byte o of the contribution of input byte p is an 8x8
// bit-matrix M(p, o) times that byte. vgf2p8affineqb multiplies every byte of a qword by the
// qword's matrix. For 16 tuples at a time we hold src, dst and (sport << 16 | dport) as three
// registers of 16 dwords, permute each (vpermb) so that 128-bit lane g holds byte position
// 4r + g of all 16 tuples, multiply by the matrix of that position and output byte o (12 affine
// products per output byte for 12 input bytes... 3 per register set), XOR the registers, then
// transpose-and-XOR the 128-bit lanes so lane o holds output byte o of the 16 hashes, and a last
// vpermb assembles the 16 dwords.
// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 headers
// (_mm512_undefined_epi32 is self-initialised by design); silence it for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "toeplitz_gfni.hpp"

namespace vnfkit::classify::detail {

#define VNFKIT_GFNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni")))

bool gfni_supported() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
}

namespace {

VNFKIT_GFNI_TARGET inline __m512i load_mats(const GfniMatrices* m, int r, int o) {
  return _mm512_load_si512(static_cast<const void*>(m + (r * 4 + o) * 8));
}

VNFKIT_GFNI_TARGET inline __m512i byte_planes_index() {
  // dest byte 16g + t <- source byte 4t + 3 - g (t: tuple 0..15, g: byte position group).
  alignas(64) std::uint8_t idx[64];
  for (int g = 0; g < 4; ++g) {
    for (int t = 0; t < 16; ++t) idx[16 * g + t] = static_cast<std::uint8_t>(4 * t + 3 - g);
  }
  return _mm512_load_si512(static_cast<const void*>(idx));
}

VNFKIT_GFNI_TARGET inline __m512i assemble_index() {
  // out byte 4t + b <- W byte 16 * (3 - b) + t (lane o holds hash byte o, o = 0 the MSB).
  alignas(64) std::uint8_t idx[64];
  for (int t = 0; t < 16; ++t) {
    for (int b = 0; b < 4; ++b) idx[4 * t + b] = static_cast<std::uint8_t>(16 * (3 - b) + t);
  }
  return _mm512_load_si512(static_cast<const void*>(idx));
}

template <bool kPorts>
VNFKIT_GFNI_TARGET inline __m512i hash16(const GfniMatrices* m, __m512i planes, __m512i s, __m512i d,
                                         __m512i p) {
  const __m512i ps = _mm512_permutexvar_epi8(planes, s);
  const __m512i pd = _mm512_permutexvar_epi8(planes, d);
  __m512i pp = _mm512_setzero_si512();
  if constexpr (kPorts) pp = _mm512_permutexvar_epi8(planes, p);
  __m512i y[4];
  for (int o = 0; o < 4; ++o) {
    __m512i acc = _mm512_xor_si512(_mm512_gf2p8affine_epi64_epi8(ps, load_mats(m, 0, o), 0),
                                   _mm512_gf2p8affine_epi64_epi8(pd, load_mats(m, 1, o), 0));
    if constexpr (kPorts) acc = _mm512_xor_si512(acc, _mm512_gf2p8affine_epi64_epi8(pp, load_mats(m, 2, o), 0));
    y[o] = acc;
  }
  // Lane transpose + XOR: W lane o = XOR over g of y[o] lane g.
  const __m512i s01 = _mm512_xor_si512(_mm512_shuffle_i64x2(y[0], y[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                       _mm512_shuffle_i64x2(y[0], y[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512i s23 = _mm512_xor_si512(_mm512_shuffle_i64x2(y[2], y[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                       _mm512_shuffle_i64x2(y[2], y[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_xor_si512(_mm512_shuffle_i64x2(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i64x2(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <bool kPorts, bool kSymmetric>
VNFKIT_GFNI_TARGET std::size_t run(const GfniMatrices* m, const std::uint32_t* src, const std::uint32_t* dst,
                                   const std::uint16_t* sport, const std::uint16_t* dport, std::size_t n,
                                   std::uint32_t* out) {
  const __m512i planes = byte_planes_index();
  const __m512i assemble = assemble_index();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i s = _mm512_loadu_si512(static_cast<const void*>(src + i));
    __m512i d = _mm512_loadu_si512(static_cast<const void*>(dst + i));
    __m512i sp = _mm512_setzero_si512();
    __m512i dp = _mm512_setzero_si512();
    if constexpr (kPorts) {
      sp = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sport + i)));
      dp = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dport + i)));
    }
    if constexpr (kSymmetric) {
      __mmask16 swap = _mm512_cmpgt_epu32_mask(s, d);
      if constexpr (kPorts) {
        swap = static_cast<__mmask16>(swap | (_mm512_cmpeq_epu32_mask(s, d) & _mm512_cmpgt_epu32_mask(sp, dp)));
      }
      const __m512i s2 = _mm512_mask_blend_epi32(swap, s, d);
      d = _mm512_mask_blend_epi32(swap, d, s);
      s = s2;
      if constexpr (kPorts) {
        const __m512i sp2 = _mm512_mask_blend_epi32(swap, sp, dp);
        dp = _mm512_mask_blend_epi32(swap, dp, sp);
        sp = sp2;
      }
    }
    const __m512i p = _mm512_or_si512(_mm512_slli_epi32(sp, 16), dp);
    const __m512i w = hash16<kPorts>(m, planes, s, d, p);
    _mm512_storeu_si512(static_cast<void*>(out + i), _mm512_permutexvar_epi8(assemble, w));
  }
  return i;
}

}  // namespace

std::size_t hash_v4_gfni(const GfniMatrices* m, const std::uint32_t* src, const std::uint32_t* dst,
                         const std::uint16_t* sport, const std::uint16_t* dport, std::size_t n, bool ports,
                         bool symmetric, std::uint32_t* out) noexcept {
  if (ports) {
    return symmetric ? run<true, true>(m, src, dst, sport, dport, n, out)
                     : run<true, false>(m, src, dst, sport, dport, n, out);
  }
  return symmetric ? run<false, true>(m, src, dst, sport, dport, n, out)
                   : run<false, false>(m, src, dst, sport, dport, n, out);
}

}  // namespace vnfkit::classify::detail
