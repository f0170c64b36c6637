// RSS indirection table (RETA): maps a hash to a receive queue.
//
// queue = table[hash & (size - 1)]: the LOW bits of the Toeplitz hash select the entry, as on Intel
// NICs (82599: 7 LSBs for a 128-entry table) and in DPDK. The size is a power of two, 1..65536.
// Entries are queue numbers < num_queues; the default fill is round robin (entry i -> i % num_queues).
//
// Run-time updates (set / assign / fill_round_robin) may race with lookups from another thread:
// every entry is read and written with relaxed atomics, so a concurrent classify sees, for each
// packet, either the old or the new queue of that entry (both valid). Size and num_queues are fixed
// at construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace vnfkit::classify {

inline constexpr std::size_t kMaxRetaSize = 65536;
inline constexpr std::size_t kMaxQueues = 1024;

class Reta {
 public:
  // Throws std::invalid_argument if size is not a power of two in 1..65536 or num_queues is not
  // in 1..1024.
  explicit Reta(std::size_t size = 128, std::size_t num_queues = 1);

  [[nodiscard]] std::size_t size() const noexcept { return table_.size(); }
  [[nodiscard]] std::uint32_t mask() const noexcept { return mask_; }
  [[nodiscard]] std::size_t num_queues() const noexcept { return num_queues_; }

  [[nodiscard]] std::uint16_t lookup(std::uint32_t hash) const noexcept {
    return std::atomic_ref<std::uint16_t>(const_cast<std::uint16_t&>(table_[hash & mask_])).load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint16_t get(std::size_t index) const;  // throws std::out_of_range

  // Throws std::invalid_argument (index >= size, queue >= num_queues, wrong table length);
  // nothing is changed when it throws.
  void set(std::size_t index, std::size_t queue);
  void assign(std::span<const std::uint16_t> table);
  void fill_round_robin() noexcept;
  void copy_to(std::uint16_t* out) const noexcept;  // size() entries

 private:
  std::vector<std::uint16_t> table_;
  std::uint32_t mask_ = 0;
  std::size_t num_queues_ = 1;
};

}  // namespace vnfkit::classify
