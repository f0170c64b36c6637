// SlabRing: a lock-free single-producer / single-consumer ring of packet slabs in caller-provided
// memory (e.g. an mmap of a shared-memory file), in the spirit of DPDK's rte_ring + rte_mempool.
//
// Each of the `slots` ring entries owns one fixed-size slab (see slab.hpp) that holds a whole batch:
// its columns and packet bytes, written contiguously by the dispatcher (like a NIC DMA-ing into
// mbufs). A batch then moves through three stages, each advanced by exactly one party:
//
//   prod      dispatcher: slabs filled and handed to the worker           (dispatcher writes)
//   done      worker:     slabs processed in place, outputs ready          (worker writes)
//   released  dispatcher: outputs handed on, slab free for refilling      (dispatcher writes)
//
// with released <= done <= prod <= released + slots. Because a queue's outputs are released in
// arrival order, slabs free up in the order they were filled, so the ring's `released` cursor is
// the pool's free list and no separate mempool is needed (DPDK's "staged ring" idea). Cursors are
// 32-bit, free-running, compared with wrap-around arithmetic; each sits on its own cache line.
//
// Cross-process use: the atomics are lock-free (static_assert), hence address-free, so they work
// in a MAP_SHARED mapping. An idle side spins briefly, then sleeps on a shared futex of the cursor
// it waits for; the other side wakes it only when it announced that it sleeps (Dekker-style, with
// sequentially consistent flag/cursor accesses, so no wake-up is lost).
//
// The ring never allocates, never throws after construction, and never owns the memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

namespace vnfkit::runtime {

inline constexpr std::size_t kCacheLine = 64;

struct RingConfig {
  std::uint32_t slots = 8;             // power of two, 2..65536
  std::uint64_t slab_bytes = 1 << 20;  // bytes per slab (multiple of 64)

  // Throws std::invalid_argument naming the field.
  [[nodiscard]] RingConfig validated() const;
};

class SlabRing {
 public:
  // How long a waiting side polls before it sleeps on the futex (200 us: a worker fed a slab at
  // least every T <= 200 us never sleeps; an idle one sleeps after 200 us).
  static constexpr std::uint64_t kDefaultSpinNs = 200'000;

  // Bytes of memory a ring with `cfg` needs (header + slabs).
  [[nodiscard]] static std::size_t required_bytes(const RingConfig& cfg);

  // Lay a new ring out in `mem` (zeroes the header; slab contents are left as they are).
  // Throws std::invalid_argument if `mem` is too small or not 64-byte aligned.
  static SlabRing create(std::span<std::byte> mem, const RingConfig& cfg);
  // Attach to a ring another party created in `mem`; checks the magic and the sizes.
  static SlabRing attach(std::span<std::byte> mem);

  [[nodiscard]] const RingConfig& config() const noexcept { return cfg_; }
  [[nodiscard]] std::byte* slab(std::uint32_t cursor) const noexcept;

  // ---- dispatcher (producer of inputs, consumer of outputs)
  // Cursor of the next slab to fill, or false if all slabs are in flight.
  [[nodiscard]] bool can_fill() const noexcept;
  [[nodiscard]] std::uint32_t fill_cursor() const noexcept;
  // Publish the slab at fill_cursor() to the worker (wakes it if it sleeps).
  void commit_fill() noexcept;
  // Slabs processed by the worker and not yet released.
  [[nodiscard]] std::uint32_t outputs_ready() const noexcept;
  [[nodiscard]] std::uint32_t release_cursor() const noexcept;
  void commit_release() noexcept;
  [[nodiscard]] std::uint32_t in_flight() const noexcept;  // prod - released
  [[nodiscard]] std::uint32_t unprocessed() const noexcept;  // prod - done: handed on, not yet finished
  // Wait until an output is ready, at most timeout_ns: poll for up to spin_ns, then sleep on the
  // futex. True if one is ready.
  bool wait_output(std::uint64_t timeout_ns, std::uint64_t spin_ns = kDefaultSpinNs) noexcept;

  // ---- worker (consumer of inputs, producer of outputs)
  [[nodiscard]] bool input_ready() const noexcept;
  [[nodiscard]] std::uint32_t work_cursor() const noexcept;
  void commit_done() noexcept;  // wakes the dispatcher if it sleeps
  // Wait until a slab is ready (or a stop is requested), at most timeout_ns: poll for up to
  // spin_ns, then sleep on the futex. A worker that keeps polling while slabs keep coming answers
  // in well under a microsecond; one woken from the futex pays the scheduler's (and on a VM the
  // hypervisor's) wake-up, tens to hundreds of microseconds.
  bool wait_input(std::uint64_t timeout_ns, std::uint64_t spin_ns = kDefaultSpinNs) noexcept;

  // Wake a worker sleeping in wait_input (it returns false: it should look at user_word()).
  void notify_worker() noexcept;
  // Ask the worker to stop (it sees stopped() after its current slab); wakes it.
  void request_stop() noexcept;
  [[nodiscard]] bool stopped() const noexcept;

  // A counter any party may bump (e.g. the control-state version the dispatcher published).
  [[nodiscard]] std::atomic<std::uint64_t>& user_word() const noexcept;

 private:
  struct Header;
  SlabRing(Header* h, std::byte* slabs, RingConfig cfg) : h_(h), slabs_(slabs), cfg_(cfg) {}
  Header* h_;
  std::byte* slabs_;
  RingConfig cfg_;
};

}  // namespace vnfkit::runtime
