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
#include <stdexcept>
#include <vector>

#include "vnfkit/ftlog/determinant.hpp"

namespace vnfkit::ftlog {

inline constexpr std::uint32_t kChunkMagic = 0x4C444B56u;  // "VKDL"
inline constexpr std::uint16_t kChunkVersion = 1;
inline constexpr std::size_t kChunkHeaderSize = 24;
inline constexpr std::size_t kChunkTrailerSize = 4;

// The part of a log other processes may read: positions and the records themselves. For a log in
// shared memory the records follow this header directly (64-byte aligned); a heap log keeps its
// header privately and its records in a growable buffer.
struct alignas(64) LogShared {
  std::atomic<std::uint64_t> reserved;     // reserved_end(): committed + promised by a batch in flight
  std::atomic<std::uint64_t> base;         // drained position
  std::atomic<std::uint64_t> size;         // committed records held (published with release)
  std::uint64_t capacity;                  // records that fit (fixed for a shared-memory log)
  std::atomic<std::uint64_t> full_events;  // appends refused because the log was full
  std::atomic<std::int32_t> owner_pid;     // process appending to it (0 = none)
  std::uint32_t thread;

  Determinant* records() noexcept { return reinterpret_cast<Determinant*>(this + 1); }
  const Determinant* records() const noexcept { return reinterpret_cast<const Determinant*>(this + 1); }
  static std::size_t bytes_for(std::size_t capacity) noexcept { return sizeof(LogShared) + capacity * sizeof(Determinant); }
};
static_assert(sizeof(LogShared) == 64);

// An append to a fixed-capacity (shared-memory) log that does not fit. Raised before the access
// has any effect (nothing applied, nothing logged) and counted in full_events(): drain the log
// (drain_chunk) more often or give the arena a larger log capacity.
class LogFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Single-writer log: only the owning worker appends and drains. Other threads, or other processes
// for a log in shared memory, may read reserved_end() (the output-commit vector clock) and the
// held records (read_shared_log) at any time.
class DeterminantLog {
 public:
  // A heap log that grows as needed.
  explicit DeterminantLog(std::size_t initial_capacity = 1 << 16);
  // A fixed-capacity log in shared memory (`shared->capacity` records after the header). Continues
  // from the positions found there (a replacement worker resumes a dead worker's log).
  explicit DeterminantLog(LogShared* shared) noexcept;

  // Reserve room for n records (may allocate: call before the per-packet loop) and publish the
  // positions they will occupy, so any effect another thread can observe from this batch is
  // covered by reserved_end(). Returns where to write them. A full fixed-capacity log throws
  // LogFullError (counted) and reserves nothing.
  Determinant* reserve(std::size_t n);
  // Make the first n reserved records part of the log (n <= the last reserve()).
  void commit(std::size_t n) noexcept {
    size_ += n;
    sh_->size.store(size_, std::memory_order_release);
  }

  // Absolute position of the next record (records drained + records held).
  [[nodiscard]] std::uint64_t position() const noexcept { return base_ + size_; }
  // Position up to which records are committed or promised by an in-flight batch.
  [[nodiscard]] std::uint64_t reserved_end() const noexcept { return sh_->reserved.load(std::memory_order_acquire); }
  [[nodiscard]] std::uint64_t drained_position() const noexcept { return base_; }
  [[nodiscard]] std::size_t held() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool fixed() const noexcept { return own_ == nullptr; }
  [[nodiscard]] std::uint64_t full_events() const noexcept { return sh_->full_events.load(std::memory_order_relaxed); }
  [[nodiscard]] std::span<const Determinant> records() const noexcept { return {data_, size_}; }
  [[nodiscard]] const LogShared& shared() const noexcept { return *sh_; }
  [[nodiscard]] LogShared& shared() noexcept { return *sh_; }

  // Encode the held records as one chunk and drop them from memory.
  std::vector<std::uint8_t> drain_chunk(std::uint16_t thread);
  // Forget everything and restart positions at `position` (e.g. after a checkpoint).
  void reset(std::uint64_t position = 0) noexcept;

 private:
  std::unique_ptr<LogShared> own_;            // heap log: private header
  std::unique_ptr<Determinant[]> heap_data_;  // heap log: growable records
  LogShared* sh_;
  Determinant* data_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::uint64_t base_ = 0;
};

// Copy the records of `log` from absolute position `from` to its committed end into `out`; returns
// the position of out[0]. Safe while the writer appends (and detects a concurrent drain, retrying);
// the way another process reads a worker's log, also after that worker died. Throws
// std::invalid_argument if `from` was drained already or lies beyond the end.
// `records` is where the log keeps them (log.records() for a log in shared memory).
std::uint64_t read_shared_log(const LogShared& log, const Determinant* records, std::uint64_t from,
                              std::vector<Determinant>& out);

struct Chunk {
  std::uint16_t thread = 0;
  std::uint64_t first_position = 0;
  std::vector<Determinant> records;
};

// Encode records as one chunk.
std::vector<std::uint8_t> encode_chunk(std::uint16_t thread, std::uint64_t first_position,
                                       std::span<const Determinant> records);
// One input batch's determinant record of the streaming master's log: "VKDR", the input's
// sequence number (u64), the worker count (u32), then per worker q its index (u32), its chunk's
// length (u32) and the chunk (empty: no records of that worker). Little-endian, no padding.
inline constexpr std::size_t kDetRecordHeaderSize = 16;
inline constexpr std::size_t kDetRecordPartSize = 8;
std::vector<std::uint8_t> encode_det_record(std::uint64_t seq, std::span<const std::vector<std::uint8_t>> chunks);
// Parse one or more concatenated chunks; throws LogFormatError on any damage.
std::vector<Chunk> parse_chunks(std::span<const std::uint8_t> bytes);

}  // namespace vnfkit::ftlog
