// LatencyHistogram: per-packet latencies (ns) counted in log-linear buckets, natively.
//
// The bucket layout is the one of vnfkit.hdr.HdrHistogram (classic HdrHistogram): with `b`
// sub-bucket bits (b = ceil(log2(2 * 10^digits))), values below 2^b are counted exactly; above that,
// each power-of-two range is split into 2^(b-1) equal sub-buckets, so every value is kept to within
// 10^-digits of itself. Python merges the counts into an HdrHistogram of the same highest value and
// digits (HdrHistogram.add_counts). Recording is a few shifts and one increment: no allocation
// after construction, no exceptions.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

namespace vnfkit::runtime {

class LatencyHistogram {
 public:
  // Throws std::invalid_argument naming the field: highest_value in [2, 2^53), digits in 1..5.
  explicit LatencyHistogram(std::uint64_t highest_value = 3'600'000'000'000ull, int significant_digits = 3);

  void record(std::uint64_t v) noexcept { record_n(v, 1); }
  // `count` values equal to v (one bucket update for a run of packets with one latency).
  void record_n(std::uint64_t v, std::uint64_t count) noexcept {
    if (count == 0) return;
    total_ += count;
    if (v > max_) max_ = v;
    if (v > highest_) {  // counted, not binned; min is of the binned values (as HdrHistogram)
      overflow_ += count;
      return;
    }
    if (v < min_) min_ = v;
    counts_[index(v)] += count;
  }
  [[nodiscard]] std::size_t index(std::uint64_t v) const noexcept {
    const auto bl = static_cast<int>(std::bit_width(v | mask_));
    const int bucket = bl - bits_;
    const std::uint64_t sub = v >> bucket;
    return static_cast<std::size_t>(bucket + 1) * half_ + static_cast<std::size_t>(sub - half_);
  }
  void clear() noexcept;

  [[nodiscard]] const std::vector<std::uint64_t>& counts() const noexcept { return counts_; }
  [[nodiscard]] std::uint64_t total() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t overflow() const noexcept { return overflow_; }
  [[nodiscard]] std::uint64_t min() const noexcept { return min_ == ~0ull ? 0 : min_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }
  [[nodiscard]] std::uint64_t highest_value() const noexcept { return highest_; }
  [[nodiscard]] int significant_digits() const noexcept { return digits_; }

 private:
  std::uint64_t highest_;
  int digits_;
  int bits_;
  std::size_t half_;
  std::uint64_t mask_;
  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0, overflow_ = 0, min_ = ~0ull, max_ = 0;
};

}  // namespace vnfkit::runtime
