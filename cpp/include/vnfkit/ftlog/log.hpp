// Per-thread append-only determinant log and its framed, checksummed chunk format.
//
// Chunk layout (little-endian), several chunks may be concatenated:
//   magic "VKDL" u32 | version u16 | thread u16 | first position u64 | count u32 |
//   record size u16 (24) | reserved u16 | count * 24-byte records | CRC32C u32 over all before it.
// Positions are absolute: the i-th record ever appended by a thread has position i (drains do not
// reset them), so (thread, position) names a record for output commit and stable-storage acks.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "vnfkit/ftlog/determinant.hpp"

namespace vnfkit::ftlog {

inline constexpr std::uint32_t kChunkMagic = 0x4C444B56u;  // "VKDL"
inline constexpr std::uint16_t kChunkVersion = 1;
inline constexpr std::size_t kChunkHeaderSize = 24;
inline constexpr std::size_t kChunkTrailerSize = 4;

// Single-writer log: only the owning worker thread appends and drains. Other threads may read
// reserved_end() (the output-commit vector clock) at any time.
class DeterminantLog {
 public:
  explicit DeterminantLog(std::size_t initial_capacity = 1 << 16);

  // Reserve room for n records (may allocate: call before the per-packet loop) and publish the
  // positions they will occupy, so any effect another thread can observe from this batch is
  // covered by reserved_end(). Returns where to write them.
  Determinant* reserve(std::size_t n);
  // Make the first n reserved records part of the log (n <= the last reserve()).
  void commit(std::size_t n) noexcept { size_ += n; }

  // Absolute position of the next record (records drained + records held).
  [[nodiscard]] std::uint64_t position() const noexcept { return base_ + size_; }
  // Position up to which records are committed or promised by an in-flight batch.
  [[nodiscard]] std::uint64_t reserved_end() const noexcept { return reserved_.load(std::memory_order_acquire); }
  [[nodiscard]] std::uint64_t drained_position() const noexcept { return base_; }
  [[nodiscard]] std::size_t held() const noexcept { return size_; }
  [[nodiscard]] std::span<const Determinant> records() const noexcept { return {data_.get(), size_}; }

  // Encode the held records as one chunk and drop them from memory.
  std::vector<std::uint8_t> drain_chunk(std::uint16_t thread);
  // Forget everything and restart positions at `position` (e.g. after a checkpoint).
  void reset(std::uint64_t position = 0) noexcept;

 private:
  std::unique_ptr<Determinant[]> data_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::uint64_t base_ = 0;
  std::atomic<std::uint64_t> reserved_{0};
};

struct Chunk {
  std::uint16_t thread = 0;
  std::uint64_t first_position = 0;
  std::vector<Determinant> records;
};

// Encode records as one chunk.
std::vector<std::uint8_t> encode_chunk(std::uint16_t thread, std::uint64_t first_position,
                                       std::span<const Determinant> records);
// Parse one or more concatenated chunks; throws LogFormatError on any damage.
std::vector<Chunk> parse_chunks(std::span<const std::uint8_t> bytes);

}  // namespace vnfkit::ftlog
