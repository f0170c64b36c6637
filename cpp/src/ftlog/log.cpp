#include "vnfkit/ftlog/log.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::ftlog {

const char* op_name(Op op) noexcept {
  switch (op) {
    case Op::kNone: return "none";
    case Op::kCounterAdd: return "counter.add";
    case Op::kCounterRead: return "counter.read";
    case Op::kBucketConsume: return "token_bucket.consume";
    case Op::kPoolAlloc: return "port_pool.allocate";
    case Op::kPoolRelease: return "port_pool.release";
    case Op::kRegLoad: return "register.load";
    case Op::kRegStore: return "register.store";
    case Op::kRegExchange: return "register.exchange";
    case Op::kRegAdd: return "register.add";
    case Op::kRegCas: return "register.compare_exchange";
    case Op::kClock: return "clock";
    case Op::kRandom: return "random";
  }
  return "unknown";
}

DeterminantLog::DeterminantLog(std::size_t initial_capacity)
    : data_(new Determinant[std::max<std::size_t>(initial_capacity, 64)]),
      capacity_(std::max<std::size_t>(initial_capacity, 64)) {}

Determinant* DeterminantLog::reserve(std::size_t n) {
  if (size_ + n > capacity_) {
    std::size_t cap = capacity_ * 2;
    while (cap < size_ + n) cap *= 2;
    std::unique_ptr<Determinant[]> bigger(new Determinant[cap]);
    if (size_) std::memcpy(bigger.get(), data_.get(), size_ * sizeof(Determinant));
    data_ = std::move(bigger);
    capacity_ = cap;
  }
  // Publish the promise, then a release fence: any shared-state write of this batch (even a relaxed
  // RMW) that another thread reads, followed by an acquire fence there (SharedState::positions()),
  // makes this store visible to it. So a vector clock taken after observing an effect covers it.
  reserved_.store(base_ + size_ + n, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  return data_.get() + size_;
}

std::vector<std::uint8_t> DeterminantLog::drain_chunk(std::uint16_t thread) {
  auto out = encode_chunk(thread, base_, {data_.get(), size_});
  base_ += size_;
  size_ = 0;
  return out;
}

void DeterminantLog::reset(std::uint64_t position) noexcept {
  base_ = position;
  size_ = 0;
  reserved_.store(position, std::memory_order_seq_cst);
}

namespace {
template <typename T>
void put(std::vector<std::uint8_t>& out, std::size_t& at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
  at += sizeof(T);
}
template <typename T>
T get(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

std::vector<std::uint8_t> encode_chunk(std::uint16_t thread, std::uint64_t first_position,
                                       std::span<const Determinant> records) {
  if (records.size() > 0xFFFFFFFFull) throw std::invalid_argument("chunk: too many records");
  const std::size_t payload = records.size_bytes();
  std::vector<std::uint8_t> out(kChunkHeaderSize + payload + kChunkTrailerSize);
  std::size_t at = 0;
  put<std::uint32_t>(out, at, kChunkMagic);
  put<std::uint16_t>(out, at, kChunkVersion);
  put<std::uint16_t>(out, at, thread);
  put<std::uint64_t>(out, at, first_position);
  put<std::uint32_t>(out, at, static_cast<std::uint32_t>(records.size()));
  put<std::uint16_t>(out, at, static_cast<std::uint16_t>(sizeof(Determinant)));
  put<std::uint16_t>(out, at, 0);
  if (payload) std::memcpy(out.data() + at, records.data(), payload);
  at += payload;
  const std::uint32_t crc = snapshot::crc32c({out.data(), at});
  put<std::uint32_t>(out, at, crc);
  return out;
}

std::vector<Chunk> parse_chunks(std::span<const std::uint8_t> bytes) {
  std::vector<Chunk> chunks;
  std::size_t at = 0;
  while (at < bytes.size()) {
    const std::string where = "determinant log chunk " + std::to_string(chunks.size()) + " (byte " +
                              std::to_string(at) + ")";
    const std::size_t left = bytes.size() - at;
    const std::uint8_t* p = bytes.data() + at;
    if (left < kChunkHeaderSize + kChunkTrailerSize) throw LogFormatError(where + ": truncated header");
    if (get<std::uint32_t>(p) != kChunkMagic) throw LogFormatError(where + ": bad magic (not a determinant log)");
    if (get<std::uint16_t>(p + 4) != kChunkVersion) {
      throw LogFormatError(where + ": unsupported version " + std::to_string(get<std::uint16_t>(p + 4)));
    }
    Chunk c;
    c.thread = get<std::uint16_t>(p + 6);
    c.first_position = get<std::uint64_t>(p + 8);
    const std::uint64_t count = get<std::uint32_t>(p + 16);
    if (get<std::uint16_t>(p + 20) != sizeof(Determinant)) throw LogFormatError(where + ": bad record size");
    const std::uint64_t total = kChunkHeaderSize + count * sizeof(Determinant) + kChunkTrailerSize;
    if (total > left) {
      throw LogFormatError(where + " (thread " + std::to_string(c.thread) + "): truncated: needs " +
                           std::to_string(total) + " bytes, " + std::to_string(left) + " left");
    }
    const std::size_t body = static_cast<std::size_t>(total) - kChunkTrailerSize;
    if (snapshot::crc32c({p, body}) != get<std::uint32_t>(p + body)) {
      throw LogFormatError(where + " (thread " + std::to_string(c.thread) + "): CRC32C mismatch (log corrupted)");
    }
    c.records.resize(static_cast<std::size_t>(count));
    if (count) std::memcpy(c.records.data(), p + kChunkHeaderSize, static_cast<std::size_t>(count) * sizeof(Determinant));
    chunks.push_back(std::move(c));
    at += static_cast<std::size_t>(total);
  }
  return chunks;
}

}  // namespace vnfkit::ftlog
