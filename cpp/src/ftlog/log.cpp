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
    : own_(std::make_unique<LogShared>()),
      heap_data_(new Determinant[std::max<std::size_t>(initial_capacity, 64)]),
      sh_(own_.get()),
      data_(heap_data_.get()),
      capacity_(std::max<std::size_t>(initial_capacity, 64)) {
  sh_->capacity = capacity_;
}

DeterminantLog::DeterminantLog(LogShared* shared) noexcept
    : sh_(shared), data_(shared->records()), capacity_(static_cast<std::size_t>(shared->capacity)) {
  base_ = sh_->base.load(std::memory_order_acquire);
  size_ = static_cast<std::size_t>(sh_->size.load(std::memory_order_acquire));
  // A batch that was in flight when a previous owner died never committed: drop its promise.
  sh_->reserved.store(base_ + size_, std::memory_order_release);
}

Determinant* DeterminantLog::reserve(std::size_t n) {
  if (size_ + n > capacity_) {
    if (fixed()) {
      sh_->full_events.fetch_add(1, std::memory_order_relaxed);
      throw LogFullError("determinant log of worker " + std::to_string(sh_->thread) + " is full: " +
                         std::to_string(size_) + " of " + std::to_string(capacity_) + " records held, " +
                         std::to_string(n) + " more needed (nothing was applied); drain it (drain_chunk) more often "
                         "or create the shared-memory state with a larger log_records");
    }
    std::size_t cap = capacity_ * 2;
    while (cap < size_ + n) cap *= 2;
    std::unique_ptr<Determinant[]> bigger(new Determinant[cap]);
    if (size_) std::memcpy(bigger.get(), data_, size_ * sizeof(Determinant));
    heap_data_ = std::move(bigger);
    data_ = heap_data_.get();
    capacity_ = cap;
    sh_->capacity = cap;
  }
  // Publish the promise, then a release fence: any shared-state write of this batch (even a relaxed
  // RMW) that another thread reads, followed by an acquire fence there (SharedState::positions()),
  // makes this store visible to it. So a vector clock taken after observing an effect covers it.
  sh_->reserved.store(base_ + size_ + n, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  return data_ + size_;
}

std::vector<std::uint8_t> DeterminantLog::drain_chunk(std::uint16_t thread) {
  auto out = encode_chunk(thread, base_, {data_, size_});
  // Readers (read_shared_log) load base, then size, copy, and re-check base: clearing size before
  // moving base makes a reader that raced with this drain see a changed base and retry.
  base_ += size_;
  size_ = 0;
  sh_->size.store(0, std::memory_order_release);
  sh_->base.store(base_, std::memory_order_release);
  return out;
}

void DeterminantLog::reset(std::uint64_t position) noexcept {
  base_ = position;
  size_ = 0;
  sh_->size.store(0, std::memory_order_release);
  sh_->base.store(position, std::memory_order_release);
  sh_->reserved.store(position, std::memory_order_seq_cst);
}

std::uint64_t read_shared_log(const LogShared& log, const Determinant* records, std::uint64_t from,
                              std::vector<Determinant>& out) {
  for (;;) {
    const std::uint64_t b1 = log.base.load(std::memory_order_acquire);
    const std::uint64_t n = std::min<std::uint64_t>(log.size.load(std::memory_order_acquire), log.capacity);
    if (from < b1) {
      throw std::invalid_argument("from_position: records before " + std::to_string(b1) + " of worker " +
                                  std::to_string(log.thread) + " were drained already (asked for " +
                                  std::to_string(from) + ")");
    }
    if (from > b1 + n) {
      throw std::invalid_argument("from_position: " + std::to_string(from) + " is beyond the end of worker " +
                                  std::to_string(log.thread) + "'s log (" + std::to_string(b1 + n) + ")");
    }
    const std::size_t skip = static_cast<std::size_t>(from - b1);
    out.resize(static_cast<std::size_t>(n) - skip);
    if (!out.empty()) std::memcpy(out.data(), records + skip, out.size() * sizeof(Determinant));
    std::atomic_thread_fence(std::memory_order_acquire);
    if (log.base.load(std::memory_order_relaxed) == b1) return from;
  }
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

std::vector<std::uint8_t> encode_det_record(std::uint64_t seq, std::span<const std::vector<std::uint8_t>> chunks) {
  if (chunks.size() > 0xFFFFFFFFull) throw std::invalid_argument("determinant record: too many workers");
  std::size_t size = kDetRecordHeaderSize;
  for (const auto& c : chunks) {
    if (c.size() > 0xFFFFFFFFull) throw std::invalid_argument("determinant record: chunk over 4 GiB");
    size += kDetRecordPartSize + c.size();
  }
  std::vector<std::uint8_t> out(size);
  std::size_t at = 0;
  for (const char ch : {'V', 'K', 'D', 'R'}) out[at++] = static_cast<std::uint8_t>(ch);
  put<std::uint64_t>(out, at, seq);
  put<std::uint32_t>(out, at, static_cast<std::uint32_t>(chunks.size()));
  for (std::size_t q = 0; q < chunks.size(); ++q) {
    put<std::uint32_t>(out, at, static_cast<std::uint32_t>(q));
    put<std::uint32_t>(out, at, static_cast<std::uint32_t>(chunks[q].size()));
    if (!chunks[q].empty()) std::memcpy(out.data() + at, chunks[q].data(), chunks[q].size());
    at += chunks[q].size();
  }
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
