#pragma once
// Big-endian (network order) loads and stores of 16- and 32-bit fields at any byte offset, each a
// single unaligned word access plus a byte swap (the packet rewriters' inner loops use them).

#include <bit>
#include <cstdint>
#include <cstring>

namespace vnfkit::packet::be {

static_assert(std::endian::native == std::endian::little, "the byte swaps below assume a little-endian host");

inline std::uint16_t rd16(const std::uint8_t* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}
inline void wr16(std::uint8_t* p, std::uint16_t v) noexcept {
  v = __builtin_bswap16(v);
  std::memcpy(p, &v, 2);
}
inline std::uint32_t rd32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}
inline void wr32(std::uint8_t* p, std::uint32_t v) noexcept {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}

}  // namespace vnfkit::packet::be
