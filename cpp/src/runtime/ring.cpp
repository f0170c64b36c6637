#include "vnfkit/runtime/ring.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>

namespace vnfkit::runtime {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "cross-process rings need lock-free 32-bit atomics");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "cross-process rings need lock-free 64-bit atomics");
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "a futex word is 32 bits");

namespace {
constexpr std::uint64_t kMagic = 0x676e6972'6b666e76ull;  // "vnfkring"
constexpr std::uint32_t kLayoutVersion = 1;
}  // namespace

struct SlabRing::Header {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t slots;
  std::uint64_t slab_bytes;
  alignas(kCacheLine) std::atomic<std::uint32_t> prod;
  alignas(kCacheLine) std::atomic<std::uint32_t> done;
  alignas(kCacheLine) std::atomic<std::uint32_t> released;
  alignas(kCacheLine) std::atomic<std::uint32_t> worker_sleeps;
  std::atomic<std::uint32_t> dispatcher_sleeps;
  std::atomic<std::uint32_t> stop;
  std::atomic<std::uint64_t> user;
};

namespace {

constexpr std::size_t header_bytes() { return 5 * kCacheLine; }

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t val, const timespec* ts) noexcept {
  // Shared (not FUTEX_PRIVATE) futex: the word lives in memory mapped by several processes.
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, val, ts, nullptr, 0);
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Wait until `ready()` holds, `word` changes from `seen`, or timeout_ns passes: spin, then announce
// the sleep in `sleeps` and sleep on the futex.
template <typename Ready>
bool wait_on(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& sleeps, const std::atomic<std::uint32_t>& stop,
             std::uint64_t timeout_ns, std::uint64_t spin_ns, Ready ready) noexcept {
  if (ready() || stop.load(std::memory_order_acquire)) return ready();
  const auto spin_end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(std::min(spin_ns, timeout_ns));
  for (std::uint32_t i = 1;; ++i) {
    cpu_relax();
    if (ready() || stop.load(std::memory_order_acquire)) return ready();
    if ((i & 15u) == 0 && std::chrono::steady_clock::now() >= spin_end) break;  // the clock every 16 polls
  }
  const std::uint32_t seen = word.load(std::memory_order_seq_cst);
  sleeps.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the flag store before the re-check (Dekker)
  if (!ready() && !stop.load(std::memory_order_seq_cst)) {
    timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000u), static_cast<long>(timeout_ns % 1'000'000'000u)};
    futex(&word, FUTEX_WAIT, seen, &ts);  // returns at once if `word` moved on since `seen`
  }
  sleeps.store(0, std::memory_order_relaxed);
  return ready();
}

void wake_if_sleeping(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& sleeps) noexcept {
  if (sleeps.load(std::memory_order_seq_cst)) futex(&word, FUTEX_WAKE, INT_MAX, nullptr);
}

}  // namespace


RingConfig RingConfig::validated() const {
  if (slots < 2 || slots > 65536 || (slots & (slots - 1)) != 0) {
    throw std::invalid_argument("slots: must be a power of two in [2, 65536], got " + std::to_string(slots));
  }
  if (slab_bytes < kCacheLine || slab_bytes % kCacheLine != 0 || slab_bytes > (1ull << 32)) {
    throw std::invalid_argument("slab_bytes: must be a multiple of 64 in [64, 4 GiB], got " + std::to_string(slab_bytes));
  }
  return *this;
}

std::size_t SlabRing::required_bytes(const RingConfig& cfg) {
  const RingConfig c = cfg.validated();
  return header_bytes() + static_cast<std::size_t>(c.slots) * c.slab_bytes;
}

SlabRing SlabRing::create(std::span<std::byte> mem, const RingConfig& cfg) {
  const RingConfig c = cfg.validated();
  if (mem.size() < required_bytes(c)) {
    throw std::invalid_argument("mem: " + std::to_string(mem.size()) + " bytes, the ring needs " +
                                std::to_string(required_bytes(c)));
  }
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % kCacheLine != 0) throw std::invalid_argument("mem: must be 64-byte aligned");
  static_assert(sizeof(Header) <= header_bytes(), "ring header fits its reserved bytes");
  std::memset(mem.data(), 0, header_bytes());
  auto* h = new (mem.data()) Header{};  // atomics constructed in place (zero)
  h->layout_version = kLayoutVersion;
  h->slots = c.slots;
  h->slab_bytes = c.slab_bytes;
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = kMagic;
  return {h, mem.data() + header_bytes(), c};
}

SlabRing SlabRing::attach(std::span<std::byte> mem) {
  if (mem.size() < header_bytes()) throw std::invalid_argument("mem: too small for a ring header");
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % kCacheLine != 0) throw std::invalid_argument("mem: must be 64-byte aligned");
  auto* h = reinterpret_cast<Header*>(mem.data());
  if (h->magic != kMagic || h->layout_version != kLayoutVersion) throw std::invalid_argument("mem: not a vnfkit ring (bad magic)");
  RingConfig c{h->slots, h->slab_bytes};
  c = c.validated();
  if (mem.size() < required_bytes(c)) throw std::invalid_argument("mem: smaller than the ring it holds");
  return {h, mem.data() + header_bytes(), c};
}

std::byte* SlabRing::slab(std::uint32_t cursor) const noexcept {
  return slabs_ + static_cast<std::size_t>(cursor & (cfg_.slots - 1)) * cfg_.slab_bytes;
}

bool SlabRing::can_fill() const noexcept {
  return h_->prod.load(std::memory_order_relaxed) - h_->released.load(std::memory_order_relaxed) < cfg_.slots;
}
std::uint32_t SlabRing::fill_cursor() const noexcept { return h_->prod.load(std::memory_order_relaxed); }
void SlabRing::commit_fill() noexcept {
  h_->prod.fetch_add(1, std::memory_order_seq_cst);  // release: the slab's bytes before the cursor
  wake_if_sleeping(h_->prod, h_->worker_sleeps);
}
std::uint32_t SlabRing::outputs_ready() const noexcept {
  return h_->done.load(std::memory_order_acquire) - h_->released.load(std::memory_order_relaxed);
}
std::uint32_t SlabRing::release_cursor() const noexcept { return h_->released.load(std::memory_order_relaxed); }
void SlabRing::commit_release() noexcept { h_->released.fetch_add(1, std::memory_order_release); }
std::uint32_t SlabRing::in_flight() const noexcept {
  return h_->prod.load(std::memory_order_relaxed) - h_->released.load(std::memory_order_relaxed);
}
std::uint32_t SlabRing::unprocessed() const noexcept {
  return h_->prod.load(std::memory_order_relaxed) - h_->done.load(std::memory_order_acquire);
}
bool SlabRing::wait_output(std::uint64_t timeout_ns, std::uint64_t spin_ns) noexcept {
  return wait_on(h_->done, h_->dispatcher_sleeps, h_->stop, timeout_ns, spin_ns, [this] { return outputs_ready() > 0; });
}

bool SlabRing::input_ready() const noexcept {
  return h_->prod.load(std::memory_order_acquire) != h_->done.load(std::memory_order_relaxed);
}
std::uint32_t SlabRing::work_cursor() const noexcept { return h_->done.load(std::memory_order_relaxed); }
void SlabRing::commit_done() noexcept {
  h_->done.fetch_add(1, std::memory_order_seq_cst);
  wake_if_sleeping(h_->done, h_->dispatcher_sleeps);
}
bool SlabRing::wait_input(std::uint64_t timeout_ns, std::uint64_t spin_ns) noexcept {
  return wait_on(h_->prod, h_->worker_sleeps, h_->stop, timeout_ns, spin_ns, [this] { return input_ready(); });
}

void SlabRing::notify_worker() noexcept { futex(&h_->prod, FUTEX_WAKE, INT_MAX, nullptr); }
void SlabRing::request_stop() noexcept {
  h_->stop.store(1, std::memory_order_seq_cst);
  notify_worker();
  futex(&h_->done, FUTEX_WAKE, INT_MAX, nullptr);
}
bool SlabRing::stopped() const noexcept { return h_->stop.load(std::memory_order_acquire) != 0; }
std::atomic<std::uint64_t>& SlabRing::user_word() const noexcept { return h_->user; }

}  // namespace vnfkit::runtime
