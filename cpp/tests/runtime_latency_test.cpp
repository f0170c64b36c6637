// LatencyHistogram: the bucket layout of vnfkit.hdr.HdrHistogram (3 significant digits: 11 sub-bucket
// bits), overflow and min/max bookkeeping, bad configuration named.
#include <gtest/gtest.h>

#include <stdexcept>

#include "vnfkit/runtime/latency.hpp"

using vnfkit::runtime::LatencyHistogram;

TEST(LatencyHistogram, LayoutMatchesHdrHistogram) {
  LatencyHistogram h;  // highest 3600 s in ns, 3 digits
  EXPECT_EQ(h.index(0), 0u);
  EXPECT_EQ(h.index(2047), 2047u);  // exact below 2^11
  EXPECT_EQ(h.index(2048), 2048u);  // then 1024 sub-buckets per power of two
  EXPECT_EQ(h.index(2049), 2048u);
  EXPECT_EQ(h.index(4095), 3071u);
  EXPECT_EQ(h.index(4096), 3072u);
  EXPECT_EQ(h.counts().size(), 33421u);  // HdrHistogram()._counts.size
}

TEST(LatencyHistogram, RecordsOverflowMinMax) {
  LatencyHistogram h(1000, 3);
  h.record(5);
  h.record(7);
  h.record(5000);  // above highest: counted, not binned
  EXPECT_EQ(h.total(), 3u);
  EXPECT_EQ(h.overflow(), 1u);
  EXPECT_EQ(h.min(), 5u);
  EXPECT_EQ(h.max(), 5000u);
  EXPECT_EQ(h.counts()[h.index(5)], 1u);
  h.clear();
  EXPECT_EQ(h.total(), 0u);
  EXPECT_EQ(h.min(), 0u);
}

TEST(LatencyHistogram, RecordNEqualsNRecords) {
  LatencyHistogram a(1'000'000, 3), b(1'000'000, 3);
  const std::uint64_t values[] = {3, 3, 1500, 999'999, 2'000'000, 0, 1500};
  const std::uint64_t counts[] = {4, 1, 7, 2, 3, 5, 0};
  for (std::size_t i = 0; i < 7; ++i) {
    a.record_n(values[i], counts[i]);
    for (std::uint64_t c = 0; c < counts[i]; ++c) b.record(values[i]);
  }
  EXPECT_EQ(a.counts(), b.counts());
  EXPECT_EQ(a.total(), 22u);
  EXPECT_EQ(a.total(), b.total());
  EXPECT_EQ(a.overflow(), 3u);
  EXPECT_EQ(a.min(), b.min());
  EXPECT_EQ(a.max(), b.max());
  a.record_n(1, 0);  // nothing recorded: min stays
  EXPECT_EQ(a.min(), 0u);
  EXPECT_EQ(a.total(), 22u);
}

TEST(LatencyHistogram, BadConfigNamesTheField) {
  EXPECT_THROW(LatencyHistogram(1, 3), std::invalid_argument);
  EXPECT_THROW(LatencyHistogram(1000, 0), std::invalid_argument);
  EXPECT_THROW(LatencyHistogram(1000, 6), std::invalid_argument);
}
