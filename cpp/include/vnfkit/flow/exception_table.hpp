// ExceptionTable: exact-match FlowKey -> target id, with an optional hard capacity.
//
// Models both switch tables of migration avoidance: a hardware switch (capacity 2 048) and a
// software switch (capacity 0 = unbounded, grows). An insert of a new key into a full table fails
// visibly (returns false) and is counted in failed_inserts; nothing is ever evicted. Entries are
// kept in dense arrays (iteration order = insertion order, except that removal moves the last
// entry into the hole), indexed by a KeyIndex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vnfkit/flow/flow_key.hpp"
#include "vnfkit/flow/hash.hpp"
#include "vnfkit/flow/range_table.hpp"

namespace vnfkit::flow {

struct ExceptionStats {
  std::uint64_t inserts = 0;         // new keys added
  std::uint64_t updates = 0;         // existing keys re-targeted
  std::uint64_t failed_inserts = 0;  // new keys refused because the table was full
  std::uint64_t removals = 0;
};

class ExceptionTable {
 public:
  explicit ExceptionTable(std::size_t capacity = 0);
  // A copy keeps the original's reserved room, so a copy (a published version) reports the same
  // memory_bytes() and grows at the same points.
  ExceptionTable(const ExceptionTable& o);
  ExceptionTable& operator=(const ExceptionTable& o);
  ExceptionTable(ExceptionTable&&) noexcept = default;
  ExceptionTable& operator=(ExceptionTable&&) noexcept = default;
  ~ExceptionTable() = default;

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }  // 0 = unbounded
  [[nodiscard]] std::size_t size() const noexcept { return keys_.size(); }
  [[nodiscard]] const ExceptionStats& stats() const noexcept { return stats_; }
  [[nodiscard]] std::span<const FlowKey> keys() const noexcept { return keys_; }
  [[nodiscard]] std::span<const std::uint32_t> targets() const noexcept { return targets_; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

  // Inserts or re-targets k. Returns false (and counts it) if k is new and the table is full.
  // Throws std::invalid_argument for target == kNoTarget.
  bool insert(const FlowKey& k, std::uint32_t target);
  // Batch insert; ok[i] = 1 if key i is now mapped. Returns how many failed. Validates targets first.
  std::size_t insert(const FlowKey* keys, const std::uint32_t* targets, std::size_t n, std::uint8_t* ok);
  // How many of these keys are not yet in the table (distinct), for all-or-nothing callers.
  [[nodiscard]] std::size_t count_new(const FlowKey* keys, std::size_t n) const;
  bool erase(const FlowKey& k);
  std::size_t erase(const FlowKey* keys, std::size_t n, std::uint8_t* removed);
  void clear();
  void count_failed(std::size_t n) noexcept { stats_.failed_inserts += n; }

  [[nodiscard]] std::uint32_t find(const FlowKey& k) const noexcept {
    return find_hashed(k, hash_key(k));
  }
  [[nodiscard]] std::uint32_t find_hashed(const FlowKey& k, std::uint64_t h) const noexcept {
    const std::uint32_t i = index_.find(k, h, [this](std::uint32_t s) -> const FlowKey& { return keys_[s]; });
    return i == kNoSlot ? kNoTarget : targets_[i];
  }
  void prefetch(std::uint64_t h) const noexcept { index_.prefetch(h); }
  // Prefetches the key of the first signature match in h's home bucket (second pipeline stage).
  void prefetch_candidate(std::uint64_t h) const noexcept {
    const std::uint32_t c = index_.first_candidate(h);
    if (c != kNoSlot) {  // a 40-byte key may straddle two cache lines
      __builtin_prefetch(&keys_[c]);
      __builtin_prefetch(reinterpret_cast<const char*>(&keys_[c]) + sizeof(FlowKey) - 1);
    }
  }
  // out[i] = target of keys[i] or kNoTarget.
  void lookup(const FlowKey* keys, std::size_t n, std::uint32_t* out) const noexcept;

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  static ExceptionTable restore(std::span<const std::uint8_t> image);

 private:
  void grow();
  std::size_t capacity_;
  std::vector<FlowKey> keys_;
  std::vector<std::uint32_t> targets_;
  KeyIndex index_;
  ExceptionStats stats_;
};

// Steering as a switch does it: the first exception table that knows the key wins, else the range
// table's target for the flow ID (kNoTarget if none). tables may be empty.
void steer(std::span<const ExceptionTable* const> tables, const RangeTable& ranges,
           const FlowKey* keys, const std::uint32_t* flow_ids, std::size_t n, std::uint32_t* out) noexcept;

}  // namespace vnfkit::flow
