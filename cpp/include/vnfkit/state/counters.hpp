// Lock-free shared counters: direct-indexed (key = slot) or keyed (open addressing, keys claimed
// with a CAS, never removed; e.g. one counter per source /24). Additions are one fetch_add.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

class Counters final : public SharedObject {
 public:
  static constexpr std::uint64_t kEmptyKey = ~0ull;   // reserved: not a valid key
  static constexpr std::uint64_t kFull = ~0ull;       // returned when a keyed table is full
  static constexpr std::uint32_t kNoSlot = ~0u;

  // keyed=false: keys are slot indices in [0, slots). keyed=true: any key except 2^64-1, at most
  // `slots` distinct keys (rounded up to a power of two).
  Counters(std::string name, std::uint16_t id, std::size_t slots, bool keyed);

  [[nodiscard]] const char* kind() const noexcept override { return "counters"; }
  [[nodiscard]] std::string slot_name(std::uint32_t slot) const override;
  [[nodiscard]] std::size_t slots() const noexcept { return n_; }
  [[nodiscard]] bool keyed() const noexcept { return keyed_; }

  // out[i] = value after adding deltas[i] to the counter of keys[i] (kFull if a keyed table is full).
  void add(Context& ctx, std::span<const std::uint64_t> keys, std::span<const std::int64_t> deltas,
           std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out);
  // out[i] = current value of keys[i] (0 for a key never added; kFull never inserted).
  void read(Context& ctx, std::span<const std::uint64_t> keys, std::span<const std::uint64_t> packet_ids,
            std::span<std::uint64_t> out);

  // Control-plane (unlogged) views.
  [[nodiscard]] std::uint64_t get(std::uint64_t key) const;
  void items(std::vector<std::uint64_t>& keys, std::vector<std::uint64_t>& values) const;
  [[nodiscard]] std::uint64_t full_events() const noexcept { return full_.load(std::memory_order_relaxed); }

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const override;
  void restore(std::span<const std::uint8_t> image) override;
  void replay_begin() override;
  void replay_finish(std::span<const Observation> obs) override;

 private:
  struct alignas(16) Slot {
    std::atomic<std::uint64_t> key{kEmptyKey};
    std::atomic<std::uint64_t> value{0};
  };
  void validate(std::span<const std::uint64_t> keys, std::size_t n_pids, std::size_t n_out) const;
  std::uint32_t find_or_claim(std::uint64_t key) noexcept;
  [[nodiscard]] std::uint32_t find(std::uint64_t key) const noexcept;
  std::uint32_t replay_slot(Context& ctx, const ftlog::Determinant& rec, std::uint64_t key);

  std::size_t n_;
  std::size_t mask_;
  bool keyed_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<std::uint64_t> full_{0};
  std::vector<std::uint64_t> replay_start_;
};

}  // namespace vnfkit::state
