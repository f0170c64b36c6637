// RangeTable: non-overlapping ranges of the 32-bit flow-ID space, each mapped to a target id.
//
// Ranges are inclusive [lo, hi]. Gaps are allowed (a flow ID in no range maps to kNoTarget).
// Migration avoidance scales out by split(m, new_target): the range [X, Y] containing m (X < m)
// becomes [X, m-1] (keeps its target) and [m, Y] (new_target); it scales in by merge(m): the
// adjacent ranges [X, m-1] and [m, Y] become [X, Y]. Every mutation validates first and leaves the
// table unchanged when it throws std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace vnfkit::flow {

inline constexpr std::uint32_t kNoTarget = 0xFFFFFFFFu;

struct Range {
  std::uint32_t lo;
  std::uint32_t hi;  // inclusive
  std::uint32_t target;
};
static_assert(sizeof(Range) == 12);

class RangeTable {
 public:
  RangeTable() = default;
  explicit RangeTable(std::span<const Range> ranges) { assign(ranges); }

  // Replaces every range. Ranges must be sorted by lo, non-empty (lo <= hi), non-overlapping, and
  // have a target other than kNoTarget.
  void assign(std::span<const Range> ranges);
  // Splits the range containing m at m; returns the index of the new range [m, Y].
  std::size_t split(std::uint32_t m, std::uint32_t new_target);
  // Merges [X, m-1] and [m, Y] into [X, Y] with the left range's target (or `target` if given).
  std::size_t merge(std::uint32_t m, std::uint32_t target = kNoTarget);
  // Sets the target of the range containing id.
  void set_target(std::uint32_t id, std::uint32_t target);

  [[nodiscard]] std::uint32_t find(std::uint32_t id) const noexcept {
    // Index of the last range with lo <= id (branch-light binary search over lo_).
    const std::size_t n = lo_.size();
    if (n == 0) return kNoTarget;
    const std::uint32_t* base = lo_.data();
    std::size_t len = n;
    while (len > 1) {
      const std::size_t half = len / 2;
      base = (base[half] <= id) ? base + half : base;
      len -= half;
    }
    if (*base > id) return kNoTarget;
    const auto i = static_cast<std::size_t>(base - lo_.data());
    return id <= hi_[i] ? target_[i] : kNoTarget;
  }
  void lookup(const std::uint32_t* ids, std::size_t n, std::uint32_t* out) const noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return lo_.size(); }
  [[nodiscard]] std::vector<Range> ranges() const;
  // Index of the range containing id, or SIZE_MAX.
  [[nodiscard]] std::size_t index_of(std::uint32_t id) const noexcept;

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  static RangeTable restore(std::span<const std::uint8_t> image);

 private:
  static void validate(std::span<const Range> ranges);
  std::vector<std::uint32_t> lo_;
  std::vector<std::uint32_t> hi_;
  std::vector<std::uint32_t> target_;
};

}  // namespace vnfkit::flow
