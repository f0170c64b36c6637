#include "vnfkit/runtime/latency.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace vnfkit::runtime {

LatencyHistogram::LatencyHistogram(std::uint64_t highest_value, int significant_digits)
    : highest_(highest_value), digits_(significant_digits) {
  if (highest_value < 2 || highest_value >= (1ull << 53)) {
    throw std::invalid_argument("highest_value: must be in [2, 2**53), got " + std::to_string(highest_value));
  }
  if (significant_digits < 1 || significant_digits > 5) {
    throw std::invalid_argument("significant_digits: must be in 1..5, got " + std::to_string(significant_digits));
  }
  std::uint64_t p = 1;
  for (int i = 0; i < significant_digits; ++i) p *= 10;
  bits_ = static_cast<int>(std::bit_width(2 * p - 1));  // ceil(log2(2 * 10^digits)), 2*10^d not a power of 2
  half_ = std::size_t{1} << (bits_ - 1);
  mask_ = (1ull << bits_) - 1;
  counts_.assign(index(highest_value) + 1, 0);
}

void LatencyHistogram::clear() noexcept {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = overflow_ = max_ = 0;
  min_ = ~0ull;
}

}  // namespace vnfkit::runtime
