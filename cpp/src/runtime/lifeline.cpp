#include "vnfkit/runtime/lifeline.hpp"

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include "vnfkit/runtime/dispatcher.hpp"

namespace vnfkit::runtime {

namespace {
constexpr std::uint64_t kMagic = 0x76'6e'66'6c'69'66'65'31ULL;  // "vnflife1"
constexpr std::uint32_t kPollUnheldNs = 1'000'000;  // a line nobody holds yet is looked at again after 1 ms

std::system_error errno_error(const char* what, int err) { return {err, std::generic_category(), what}; }
}  // namespace

// One line: the mutex first, then what the watcher and the holder publish. The count and magic of
// the whole table live in slot 0's header words.
struct alignas(64) LifeLines::Slot {
  pthread_mutex_t mutex;
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> holder_pid;
  std::atomic<std::uint64_t> died_ns;
  std::uint64_t magic;
  std::uint64_t lines;
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free,
              "lines are shared across processes: their atomics must be address-free");

std::size_t LifeLines::required_bytes(std::size_t lines) {
  if (lines == 0 || lines > 65536) throw std::invalid_argument("lines: must be in [1, 65536]");
  return lines * sizeof(Slot);
}

LifeLines LifeLines::create(std::span<std::byte> mem, std::size_t lines) {
  const std::size_t need = required_bytes(lines);
  if (mem.size() < need) throw std::invalid_argument("mem: too small for the lines");
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % alignof(Slot) != 0) throw std::invalid_argument("mem: must be 64-byte aligned");
  auto* slots = reinterpret_cast<Slot*>(mem.data());
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  for (std::size_t i = 0; i < lines; ++i) {
    Slot* s = new (slots + i) Slot;
    const int rc = pthread_mutex_init(&s->mutex, &attr);
    if (rc != 0) {
      pthread_mutexattr_destroy(&attr);
      throw errno_error("pthread_mutex_init", rc);
    }
    s->state.store(static_cast<std::uint32_t>(State::kUnheld), std::memory_order_relaxed);
    s->holder_pid.store(0, std::memory_order_relaxed);
    s->died_ns.store(0, std::memory_order_relaxed);
    s->lines = lines;
    s->magic = 0;
  }
  pthread_mutexattr_destroy(&attr);
  for (std::size_t i = 0; i < lines; ++i) std::atomic_ref<std::uint64_t>(slots[i].magic).store(kMagic, std::memory_order_release);
  return {slots, lines};
}

LifeLines LifeLines::attach(std::span<std::byte> mem) {
  if (mem.size() < sizeof(Slot)) throw std::invalid_argument("mem: too small for a line");
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % alignof(Slot) != 0) throw std::invalid_argument("mem: must be 64-byte aligned");
  auto* slots = reinterpret_cast<Slot*>(mem.data());
  if (std::atomic_ref<std::uint64_t>(slots[0].magic).load(std::memory_order_acquire) != kMagic)
    throw std::invalid_argument("mem: not vnfkit lifelines (bad magic)");
  const std::size_t n = slots[0].lines;
  if (n == 0 || mem.size() < required_bytes(n)) throw std::invalid_argument("mem: smaller than the lines it holds");
  return {slots, n};
}

LifeLines::Slot& LifeLines::at(std::size_t i) const {
  if (i >= n_) throw std::out_of_range("line: " + std::to_string(i) + " out of range (" + std::to_string(n_) + " lines)");
  return slots_[i];
}

void LifeLines::hold(std::size_t i) {
  Slot& s = at(i);
  int rc = pthread_mutex_lock(&s.mutex);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(&s.mutex);  // a dead holder's line, taken over
  if (rc != 0) throw errno_error("LifeLines.hold", rc);
  s.died_ns.store(0, std::memory_order_relaxed);
  s.holder_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed);
  s.state.store(static_cast<std::uint32_t>(State::kHeld), std::memory_order_seq_cst);
}

void LifeLines::let_go(std::size_t i) {
  Slot& s = at(i);
  if (s.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(State::kHeld) ||
      s.holder_pid.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(::getpid()))
    throw std::invalid_argument("line " + std::to_string(i) + ": not held by this process");
  s.state.store(static_cast<std::uint32_t>(State::kLetGo), std::memory_order_seq_cst);
  const int rc = pthread_mutex_unlock(&s.mutex);
  if (rc != 0) throw errno_error("LifeLines.let_go", rc);
}

LifeLines::Seen LifeLines::watch(std::size_t i, std::uint64_t timeout_ns) {
  Slot& s = at(i);
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t until = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
                              static_cast<std::uint64_t>(ts.tv_nsec) + timeout_ns;
  ts.tv_sec = static_cast<time_t>(until / 1'000'000'000ULL);
  ts.tv_nsec = static_cast<long>(until % 1'000'000'000ULL);
  const int rc = pthread_mutex_clocklock(&s.mutex, CLOCK_MONOTONIC, &ts);
  if (rc == ETIMEDOUT) return Seen::kTimeout;
  if (rc == EOWNERDEAD) {
    const std::uint64_t now = steady_now_ns();
    pthread_mutex_consistent(&s.mutex);
    pthread_mutex_unlock(&s.mutex);
    std::uint64_t zero = 0;
    s.died_ns.compare_exchange_strong(zero, now, std::memory_order_acq_rel);
    s.state.store(static_cast<std::uint32_t>(State::kDead), std::memory_order_seq_cst);
    return Seen::kDied;
  }
  if (rc != 0) throw errno_error("LifeLines.watch", rc);
  // Got the mutex: nobody held it yet, or its holder let go.
  const auto st = static_cast<State>(s.state.load(std::memory_order_seq_cst));
  pthread_mutex_unlock(&s.mutex);
  if (st == State::kLetGo) return Seen::kLetGo;
  if (st == State::kDead) return Seen::kDied;
  // Not held yet: leave the worker room to take it, then look again (counts as a timeout).
  const std::uint64_t pause = timeout_ns < kPollUnheldNs ? timeout_ns : kPollUnheldNs;
  timespec nap{0, static_cast<long>(pause)};
  nanosleep(&nap, nullptr);
  return Seen::kTimeout;
}

LifeLines::State LifeLines::state(std::size_t i) const noexcept {
  if (i >= n_) return State::kUnheld;
  return static_cast<State>(slots_[i].state.load(std::memory_order_acquire));
}

std::uint64_t LifeLines::died_ns(std::size_t i) const noexcept {
  return i < n_ ? slots_[i].died_ns.load(std::memory_order_acquire) : 0;
}

std::uint32_t LifeLines::holder_pid(std::size_t i) const noexcept {
  return i < n_ ? slots_[i].holder_pid.load(std::memory_order_relaxed) : 0;
}

DeathWatch::DeathWatch(LifeLines lines) : lines_(lines) {
  efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd_ < 0) throw errno_error("eventfd", errno);
  try {
    threads_.reserve(lines_.size());
    for (std::size_t i = 0; i < lines_.size(); ++i) threads_.emplace_back([this, i] { run(i); });
  } catch (...) {
    stop();
    throw;
  }
}

DeathWatch::~DeathWatch() { stop(); }

void DeathWatch::run(std::size_t i) noexcept {
  while (!stop_.load(std::memory_order_acquire)) {
    LifeLines::Seen seen;
    try {
      seen = lines_.watch(i, kSliceNs);
    } catch (...) {
      return;  // a broken mutex: the pidfd still tells
    }
    if (seen == LifeLines::Seen::kLetGo) return;
    if (seen == LifeLines::Seen::kDied) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto w = ::write(efd_, &one, sizeof one);
      return;
    }
  }
}

int DeathWatch::first_dead() const noexcept {
  for (std::size_t i = 0; i < lines_.size(); ++i)
    if (lines_.state(i) == LifeLines::State::kDead) return static_cast<int>(i);
  return -1;
}

void DeathWatch::stop() noexcept {
  stop_.store(true, std::memory_order_release);
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  if (efd_ >= 0) {
    ::close(efd_);
    efd_ = -1;
  }
}

}  // namespace vnfkit::runtime
