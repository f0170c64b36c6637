// Lock-free shared counters: direct-indexed (key = slot) or keyed (open addressing, keys claimed
// with a CAS, never removed; e.g. one counter per source /24). Additions are one fetch_add.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

class Counters final : public SharedObject {
 public:
  static constexpr std::uint64_t kEmptyKey = ~0ull;   // reserved: not a valid key
  static constexpr std::uint64_t kFull = ~0ull;       // returned when a keyed table is full
  static constexpr std::uint32_t kNoSlot = ~0u;

  // keyed=false: keys are slot indices in [0, slots). keyed=true: any key except 2^64-1, at most
  // `slots` distinct keys (rounded up to a power of two). A key lives within kMaxProbe slots of its
  // home slot (linear probing), so a lookup or a miss reads at most that many slots however full
  // the table is; a table of more than kMaxProbe slots may therefore refuse a new key (kFull) a
  // little before every slot is taken (at ~97 % of uniformly hashed keys).
  static constexpr std::size_t kMaxProbe = 512;
  struct Params {
    std::size_t slots;
    bool keyed;
    [[nodiscard]] Params validated() const;
    [[nodiscard]] std::string describe() const;
    bool operator==(const Params&) const = default;
  };
  // Bytes of arena storage for p; format() initialises such storage (zeroed before).
  static std::size_t storage_bytes(const Params& p);
  static void format(void* mem, const Params& p);
  // A view of formatted storage `mem` (parameters are read from it). `keep` keeps the memory alive.
  Counters(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep);
  [[nodiscard]] Params params() const noexcept { return {n_, keyed_}; }

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
    std::atomic<std::uint64_t> key;
    std::atomic<std::uint64_t> value;
  };
  struct alignas(64) Header {
    std::uint64_t slots;
    std::uint64_t keyed;
    std::atomic<std::uint64_t> full;
  };
  void validate(std::span<const std::uint64_t> keys, std::size_t n_pids, std::size_t n_out) const;
  std::uint32_t find_or_claim(std::uint64_t key) noexcept;
  [[nodiscard]] std::uint32_t find(std::uint64_t key) const noexcept;
  std::uint32_t replay_slot(Context& ctx, const ftlog::Determinant& rec, std::uint64_t key);

  std::shared_ptr<void> keep_;
  Header* hdr_;
  std::size_t n_;
  std::size_t mask_;
  bool keyed_;
  Slot* slots_;
  std::atomic<std::uint64_t>& full_;
  std::vector<std::uint64_t> replay_start_;
};

}  // namespace vnfkit::state
