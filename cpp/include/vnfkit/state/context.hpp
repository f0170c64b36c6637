// The recording context: one per worker thread. Every access to shared state goes through it:
// unlogged (plain atomics), logged (one determinant per access appended to the thread's own log),
// or replay (each access takes the logged outcome, divergence raises DivergenceError).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/ftlog/determinant.hpp"
#include "vnfkit/ftlog/log.hpp"

namespace vnfkit::state {

enum class Mode : std::uint8_t { kUnlogged = 0, kLogged = 1, kReplay = 2 };

// What a replaying access observed, kept for the end-of-replay consistency checks.
struct Observation {
  std::uint16_t object;
  ftlog::Op op;
  std::uint8_t flags;
  std::uint32_t slot;
  std::uint64_t logged;  // the logged value
  std::uint64_t arg0;    // op arguments needed to recompute the effect
  std::uint64_t arg1;
  std::uint16_t thread = 0;  // the original thread (set by the Replayer; a thread's observations are in its order)
};

class Context {
 public:
  using NameFn = std::function<std::string(std::uint16_t object, std::uint32_t slot)>;

  // shared_log: the worker's log slot in a shared-memory arena (already claimed by this process:
  // released again on destruction), or nullptr for a heap log; `keep` keeps that memory mapped.
  Context(std::uint16_t thread, Mode mode, std::uint64_t seed, NameFn names, ftlog::LogShared* shared_log = nullptr,
          std::shared_ptr<void> keep = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  [[nodiscard]] std::uint16_t thread() const noexcept { return thread_; }
  [[nodiscard]] Mode mode() const noexcept { return mode_; }
  ftlog::DeterminantLog& log() noexcept { return log_; }
  [[nodiscard]] const ftlog::DeterminantLog& log() const noexcept { return log_; }

  // Clock reads and random draws (logged / forced like shared accesses).
  void now_ns(std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out);
  void random_u64(std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out);

  // ---- replay side (used by the state types) ----
  // Load the records this context must replay (one thread's log, in order).
  void set_replay_log(std::vector<ftlog::Determinant> records, std::uint64_t first_position);
  // Next logged record for (packet, object, op); throws DivergenceError naming them otherwise.
  const ftlog::Determinant& replay_next(std::uint64_t packet_id, std::uint16_t object, ftlog::Op op);
  [[noreturn]] void diverge(const ftlog::Determinant& rec, const std::string& why) const;
  void observe(const Observation& o) { observations_.push_back(o); }
  [[nodiscard]] std::span<const Observation> observations() const noexcept { return observations_; }
  [[nodiscard]] std::size_t replay_remaining() const noexcept { return replay_.size() - replay_pos_; }
  [[nodiscard]] const ftlog::Determinant* replay_peek() const noexcept {
    return replay_pos_ < replay_.size() ? &replay_[replay_pos_] : nullptr;
  }
  [[nodiscard]] std::string variable_name(std::uint16_t object, std::uint32_t slot) const;

 private:
  std::uint64_t next_random() noexcept;

  std::shared_ptr<void> keep_;
  std::uint16_t thread_;
  Mode mode_;
  ftlog::DeterminantLog log_;
  std::uint64_t rng_[4];
  NameFn names_;
  std::vector<ftlog::Determinant> replay_;
  std::size_t replay_pos_ = 0;
  std::uint64_t replay_first_ = 0;
  std::vector<Observation> observations_;
};

// Base of every shared aggregate state type.
class SharedObject {
 public:
  SharedObject(std::string name, std::uint16_t id) : name_(std::move(name)), id_(id) {}
  virtual ~SharedObject() = default;
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint16_t id() const noexcept { return id_; }
  [[nodiscard]] virtual const char* kind() const noexcept = 0;
  // Human-readable name of one slot, for divergence messages ("pool[port 50001]").
  [[nodiscard]] virtual std::string slot_name(std::uint32_t slot) const;

  // Versioned, CRC'd image (take at batch boundaries, with no access in flight).
  [[nodiscard]] virtual std::vector<std::uint8_t> snapshot() const = 0;
  virtual void restore(std::span<const std::uint8_t> image) = 0;

  // Replay: remember the pre-replay state; at the end, check the observations of all replay
  // contexts for consistency and install the final state. Throws DivergenceError.
  virtual void replay_begin() = 0;
  virtual void replay_finish(std::span<const Observation> obs) = 0;

 protected:
  [[noreturn]] void fail(const std::string& why) const;

 private:
  std::string name_;
  std::uint16_t id_;
};

}  // namespace vnfkit::state
