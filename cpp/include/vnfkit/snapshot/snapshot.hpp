// Versioned, checksummed snapshots of engine tables and state.
//
// Layout of one snapshot image (all integers little-endian):
//   magic "VNFKSNAP" (8) | format version u16 | kind length u16 | kind bytes | payload length u64 |
//   payload | CRC32C u32 over everything before it.
// `kind` names the producer ("flow_table", "port_pool", ...), so an image restored into the wrong
// table type is rejected with a clear message. Readers never read past the end of the image.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace vnfkit::snapshot {

inline constexpr std::uint16_t kFormatVersion = 1;

// Thrown for every malformed, truncated, corrupted or mismatched snapshot.
class SnapshotError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// CRC32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2.
std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc = 0) noexcept;

// Builds a snapshot image: put() fields in order, then finish(). The image is built in one buffer,
// header first, so finish() hands it over without a copy (the Writer is spent after it).
class Writer {
 public:
  explicit Writer(std::string_view kind);
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes({reinterpret_cast<const std::uint8_t*>(&v), sizeof(T)});
  }
  void put_bytes(std::span<const std::uint8_t> bytes);
  template <typename T>
  void put_array(std::span<const T> items) {  // u64 count, then the raw items
    static_assert(std::is_trivially_copyable_v<T>);
    put<std::uint64_t>(items.size());
    put_bytes({reinterpret_cast<const std::uint8_t*>(items.data()), items.size_bytes()});
  }
  // put_array's layout for `count` items the caller writes itself, into the bytes returned
  // (valid until the next put; not aligned for T: write them with memcpy).
  template <typename T>
  std::uint8_t* put_array_space(std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>);
    put<std::uint64_t>(count);
    return grow(count * sizeof(T));
  }
  // Room for `bytes` more payload bytes without reallocation.
  void reserve(std::size_t bytes) { buf_.reserve(buf_.size() + bytes + 4); }
  [[nodiscard]] std::vector<std::uint8_t> finish();

 private:
  std::uint8_t* grow(std::size_t n);
  std::vector<std::uint8_t> buf_;  // the header (its length word patched by finish), then the payload
  std::size_t payload_at_ = 0;
  bool finished_ = false;
};

// Checks a snapshot image (magic, version, kind, length, CRC) and reads its payload in order.
class Reader {
 public:
  Reader(std::span<const std::uint8_t> image, std::string_view expected_kind);
  template <typename T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::span<const std::uint8_t> take(std::size_t n);
  template <typename T>
  std::vector<T> get_array(std::size_t max_items = SIZE_MAX) {
    const auto n = get<std::uint64_t>();
    if (n > max_items || n > remaining() / (sizeof(T) ? sizeof(T) : 1)) {
      throw SnapshotError("snapshot: array length " + std::to_string(n) + " exceeds the image");
    }
    std::vector<T> out(static_cast<std::size_t>(n));
    auto bytes = take(static_cast<std::size_t>(n) * sizeof(T));
    if (n) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  [[nodiscard]] std::size_t remaining() const noexcept { return payload_.size() - pos_; }
  // Throws unless the whole payload was consumed.
  void expect_end() const;

 private:
  std::span<const std::uint8_t> payload_;
  std::size_t pos_ = 0;
};

}  // namespace vnfkit::snapshot
