// LifeLines: the kernel's word that a worker process died, given before its memory is torn down.
//
// One process-shared *robust* mutex per worker lives in caller-provided shared memory. A worker
// holds its line for as long as it runs. When a thread that holds a robust mutex dies (SIGKILL, a
// segfault, any exit), the kernel walks that thread's robust list early in its exit (before the
// process's address space is unmapped), marks the mutex "owner died" and wakes one waiter. The
// process's pidfd turns readable only after the unmap, which for a process that touched tens of
// megabytes takes milliseconds (on a VM, ~0.2 ms per MB), so a waiter on the line hears of the death
// that much sooner.
//
// A DeathWatch runs one thread per line, each blocked in pthread_mutex_clocklock on its line. On
// EOWNERDEAD it stamps the time (steady clock, the runtime's now_ns) into the line, marks it dead and
// bumps an eventfd (for a poll loop); a line whose worker let go cleanly (let_go, on a clean exit)
// ends its thread without a report. Looks at lines are lock-free reads of shared atomics.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <thread>
#include <vector>

namespace vnfkit::runtime {

class LifeLines {
 public:
  enum class State : std::uint32_t { kUnheld = 0, kHeld = 1, kLetGo = 2, kDead = 3 };
  // What one watch() saw.
  enum class Seen { kDied, kLetGo, kTimeout };

  // Bytes `lines` lines take (one cache-line-aligned slot each). Throws std::invalid_argument for 0.
  [[nodiscard]] static std::size_t required_bytes(std::size_t lines);
  // Lay out `lines` new lines in `mem` (64-byte aligned, required_bytes(lines) at least).
  static LifeLines create(std::span<std::byte> mem, std::size_t lines);
  // Attach to lines another process laid out in `mem`; checks the magic and the count.
  static LifeLines attach(std::span<std::byte> mem);

  [[nodiscard]] std::size_t size() const noexcept { return n_; }

  // ---- the worker's side (the thread that holds a line must be the one whose death it tells)
  // Take line `i` for the calling thread, holding it until let_go or death. A line whose previous
  // holder died is taken over (made consistent). Throws std::out_of_range, or std::system_error if the mutex is broken.
  void hold(std::size_t i);
  // A clean exit: mark the line let go and unlock it (its watcher ends without a report).
  // std::invalid_argument unless this process holds it.
  void let_go(std::size_t i);

  // ---- the watcher's side
  // Wait up to timeout_ns for line i's holder to die or let go. kDied stamps died_ns (once).
  Seen watch(std::size_t i, std::uint64_t timeout_ns);
  [[nodiscard]] State state(std::size_t i) const noexcept;
  // steady-clock ns at which the watcher was woken by the holder's death; 0 if it was not.
  [[nodiscard]] std::uint64_t died_ns(std::size_t i) const noexcept;
  [[nodiscard]] std::uint32_t holder_pid(std::size_t i) const noexcept;

 private:
  struct Slot;
  LifeLines(Slot* slots, std::size_t n) : slots_(slots), n_(n) {}
  Slot& at(std::size_t i) const;
  Slot* slots_;
  std::size_t n_;
};

class DeathWatch {
 public:
  // Starts one watcher thread per line of `lines` (whose memory must outlive this object).
  explicit DeathWatch(LifeLines lines);
  ~DeathWatch();
  DeathWatch(const DeathWatch&) = delete;
  DeathWatch& operator=(const DeathWatch&) = delete;

  // Lowest line whose holder died, or -1.
  [[nodiscard]] int first_dead() const noexcept;
  [[nodiscard]] const LifeLines& lines() const noexcept { return lines_; }
  // An eventfd bumped at every death (readable once one was seen), for poll().
  [[nodiscard]] int event_fd() const noexcept { return efd_; }
  // Stop every thread (each within one watch slice, kSliceNs) and join them; idempotent.
  void stop() noexcept;

  static constexpr std::uint64_t kSliceNs = 20'000'000;

 private:
  void run(std::size_t i) noexcept;
  LifeLines lines_;
  int efd_ = -1;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace vnfkit::runtime
