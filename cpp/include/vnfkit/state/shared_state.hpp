// The registry of one VNF's shared aggregate state: named objects (their ids are the variable ids
// in determinants), the per-worker recording contexts, and whole-state snapshots.
//
// The objects live in an Arena: the heap (default; threads of one process share it) or a POSIX
// shared-memory segment that worker processes attach (create_shm / attach_shm). Each process has
// its own SharedState over the same arena. Declaring a variable (counters(), port_pool(), ...)
// creates it, or, if any process declared it already, maps the existing one: same name and kind
// and parameters give the same object; a different kind or different parameters throw
// std::invalid_argument naming the variable. With a shared-memory arena each worker's logged
// context keeps its determinant log in the segment too, so another process can read it
// (read_log), also after the worker died.
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/arena.hpp"
#include "vnfkit/state/buffer.hpp"
#include "vnfkit/state/context.hpp"
#include "vnfkit/state/counters.hpp"
#include "vnfkit/state/port_pool.hpp"
#include "vnfkit/state/register.hpp"
#include "vnfkit/state/token_bucket.hpp"

namespace vnfkit::state {

class SharedState : public std::enable_shared_from_this<SharedState> {
 public:
  static constexpr std::size_t kMaxObjects = 0xFFFE;
  static constexpr std::size_t kMaxThreads = 1024;

  SharedState();                                  // heap arena
  explicit SharedState(std::shared_ptr<Arena> arena);
  static std::shared_ptr<SharedState> create_shm(const std::string& name, std::size_t bytes, const ShmLimits& limits = {});
  static std::shared_ptr<SharedState> attach_shm(const std::string& name);

  std::shared_ptr<Counters> counters(const std::string& name, std::size_t slots, bool keyed);
  std::shared_ptr<TokenBuckets> token_buckets(const std::string& name, std::size_t buckets, double rate_per_s,
                                              double burst);
  std::shared_ptr<PortPool> port_pool(const std::string& name, std::uint16_t lo, std::uint16_t hi,
                                      std::span<const std::uint16_t> subpool_of = {});
  std::shared_ptr<Registers> registers(const std::string& name, std::size_t slots, std::uint32_t initial);
  std::shared_ptr<SharedBuffer> buffer(const std::string& name, std::size_t nbytes);

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::shared_ptr<SharedObject> object(std::size_t id) const;
  [[nodiscard]] std::string variable_name(std::uint16_t object, std::uint32_t slot) const;
  [[nodiscard]] const Arena& arena() const noexcept { return *arena_; }
  [[nodiscard]] Arena& arena() noexcept { return *arena_; }

  // The recording context of worker `thread` (created on first use with that mode). In a
  // shared-memory arena a logged context owns the worker's log slot: a second live process asking
  // for the same worker is refused (std::invalid_argument); a dead owner's slot is taken over and
  // its log continued from its positions.
  std::shared_ptr<Context> context(std::uint16_t thread, Mode mode, std::uint64_t seed);
  // A fresh replay context for `thread` (not registered; used by Replayer).
  std::shared_ptr<Context> make_replay_context(std::uint16_t thread);
  // Vector clock for output commit: reserved_end() of every worker's log, by worker index (in a
  // shared-memory arena also the logs of workers in other processes).
  [[nodiscard]] std::vector<std::uint64_t> positions() const;
  // Records of worker `thread`'s log from absolute position `from` to its end (not drained); returns
  // the position of out[0]. Heap arena: only the owning thread, or while it is idle.
  std::uint64_t read_log(std::uint16_t thread, std::uint64_t from, std::vector<ftlog::Determinant>& out) const;
  // Records [from, to) of worker `thread`'s log framed as one chunk (ftlog::encode_chunk), not
  // drained; std::invalid_argument if to < from, or the log no longer holds `from` or does not
  // reach `to` yet.
  [[nodiscard]] std::vector<std::uint8_t> chunk_range(std::uint16_t thread, std::uint64_t from, std::uint64_t to) const;
  // Absolute [drained, end) positions of worker `thread`'s log.
  [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> log_range(std::uint16_t thread) const;

  // Every object's image, in id order, with names and kinds checked on restore.
  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  void restore(std::span<const std::uint8_t> image);

  // No further declarations or contexts; the owner unlinks the segment (mappings stay valid for
  // the objects still referenced). Idempotent.
  void close();
  [[nodiscard]] bool closed() const noexcept { return closed_; }

 private:
  template <typename T>
  std::shared_ptr<T> declare(const std::string& name, Kind kind, const typename T::Params& given);
  void sync_locked() const;
  const ftlog::LogShared* log_of(std::uint16_t thread, const ftlog::Determinant** records) const;

  std::shared_ptr<Arena> arena_;
  mutable std::mutex mu_;  // registry changes only (declarations, context creation): never per access
  mutable std::vector<std::shared_ptr<SharedObject>> objects_;  // views, in id order
  mutable std::size_t snapshot_hint_ = 0;  // bytes of the last snapshot() (reserved up front)
  std::vector<std::shared_ptr<Context>> contexts_;
  bool closed_ = false;
};

}  // namespace vnfkit::state
