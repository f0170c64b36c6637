#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "vnfkit/ftlog/stream_commit.hpp"

using vnfkit::ftlog::StreamCommit;

namespace {
std::vector<std::uint32_t> counts(std::uint32_t a, std::uint32_t b) { return {a, b}; }
std::vector<std::uint64_t> clock(std::uint64_t a, std::uint64_t b) { return {a, b}; }
}  // namespace

TEST(StreamCommit, RecordsAreCutInOrderOnceEverySlabIsBack) {
  StreamCommit sc(2);
  sc.dispatched(0, 100, 10, counts(6, 4), 1);
  sc.dispatched(1, 110, 5, counts(5, 0), 2);
  std::uint64_t seq = 99;
  std::vector<std::uint64_t> from, to;
  EXPECT_FALSE(sc.cut_record(seq, from, to));  // nothing back yet
  EXPECT_EQ(sc.returned(0, clock(3, 0), 6, 100, 109, 5), 0u);
  EXPECT_FALSE(sc.cut_record(seq, from, to));  // queue 1's slab of input 0 is out
  EXPECT_EQ(sc.returned(0, clock(7, 2), 5, 110, 114, 6), 1u);
  EXPECT_EQ(sc.returned(1, clock(7, 2), 4, 101, 108, 7), 0u);
  ASSERT_TRUE(sc.cut_record(seq, from, to));
  EXPECT_EQ(seq, 0u);
  EXPECT_EQ(from, clock(0, 0));
  EXPECT_EQ(to, clock(3, 2));
  ASSERT_TRUE(sc.cut_record(seq, from, to));  // input 1 had no slab on queue 1
  EXPECT_EQ(seq, 1u);
  EXPECT_EQ(from, clock(3, 2));
  EXPECT_EQ(to, clock(7, 2));
  EXPECT_FALSE(sc.cut_record(seq, from, to));
  EXPECT_EQ(sc.bound(), clock(7, 2));
  EXPECT_EQ(sc.next_record(), 2u);
  EXPECT_EQ(sc.busy_since_ns(1), 7u);
}

TEST(StreamCommit, ASlabLeavesOnceItsInputAndItsWholeClockAreStable) {
  StreamCommit sc(2);
  sc.dispatched(0, 0, 7, counts(3, 4), 0);
  sc.dispatched(1, 7, 2, counts(2, 0), 0);
  sc.returned(0, clock(5, 0), 3, 0, 6, 0);
  sc.returned(1, clock(5, 9), 4, 1, 5, 0);
  sc.returned(0, clock(6, 12), 2, 7, 8, 0);  // input 1 on queue 0 saw worker 1's records up to 12
  std::uint64_t seq;
  std::vector<std::uint64_t> from, to, out;
  ASSERT_TRUE(sc.cut_record(seq, from, to));
  ASSERT_TRUE(sc.cut_record(seq, from, to));
  EXPECT_EQ(sc.held_packets(), 9u);
  EXPECT_EQ(sc.held_slabs(), 3u);
  EXPECT_EQ(sc.oldest_pending(), std::optional<std::uint64_t>(0));
  EXPECT_EQ(sc.release(0, out), 0u);  // nothing acknowledged
  sc.acknowledged(1, 0);              // determinant record 0, but not its input
  EXPECT_EQ(sc.stable(), clock(5, 9));
  EXPECT_EQ(sc.release(0, out), 0u);
  sc.acknowledged(1, 2);  // an input counts once its determinant record does too
  EXPECT_EQ(sc.input_acked(), 1u);
  EXPECT_EQ(sc.release(0, out), 1u);
  EXPECT_EQ(sc.release(1, out), 1u);
  EXPECT_EQ(out, std::vector<std::uint64_t>({0, 0}));
  EXPECT_EQ(sc.release(0, out), 0u);
  sc.acknowledged(0, 0);  // a late, smaller acknowledgement changes nothing
  EXPECT_EQ(sc.input_acked(), 1u);
  sc.acknowledged(2, 2);  // record 1: worker 1's log is stable to 9 (its last slab), the slab saw 12
  EXPECT_EQ(sc.stable(), clock(6, 9));
  EXPECT_EQ(sc.release(0, out), 0u);
  EXPECT_EQ(sc.held_packets(), 2u);
}

TEST(StreamCommit, ClockCoveredByALaterRecordReleasesThen) {
  StreamCommit sc(2);
  sc.dispatched(0, 0, 2, counts(1, 1), 0);
  sc.dispatched(1, 2, 2, counts(1, 1), 0);
  sc.returned(0, clock(1, 3), 1, 0, 0, 0);  // done while worker 1 was inside its slab of input 1
  sc.returned(1, clock(1, 2), 1, 1, 1, 0);
  sc.returned(1, clock(1, 4), 1, 3, 3, 0);
  sc.returned(0, clock(2, 4), 1, 2, 2, 0);
  std::uint64_t seq;
  std::vector<std::uint64_t> from, to, out;
  ASSERT_TRUE(sc.cut_record(seq, from, to));
  ASSERT_TRUE(sc.cut_record(seq, from, to));
  sc.acknowledged(1, 2);
  EXPECT_EQ(sc.release(0, out), 0u);  // needs worker 1's position 3, in record 1
  EXPECT_EQ(sc.release(1, out), 1u);
  sc.acknowledged(2, 2);
  EXPECT_EQ(sc.release(0, out), 2u);
  EXPECT_EQ(sc.release(1, out), 1u);
  EXPECT_FALSE(sc.oldest_pending().has_value());
}

TEST(StreamCommit, MisuseIsRefused) {
  StreamCommit sc(2);
  EXPECT_THROW(StreamCommit(0), std::invalid_argument);
  EXPECT_THROW(sc.dispatched(0, 0, 1, std::vector<std::uint32_t>{1}, 0), std::invalid_argument);
  sc.dispatched(5, 50, 4, counts(2, 2), 0);
  EXPECT_THROW(sc.dispatched(7, 60, 1, counts(1, 0), 0), std::invalid_argument);  // not the next input
  EXPECT_THROW(sc.returned(0, clock(0, 0), 2, 48, 51, 0), std::logic_error);       // ids of another input
  EXPECT_THROW(sc.returned(0, std::vector<std::uint64_t>{0}, 2, 50, 51, 0), std::logic_error);
  EXPECT_THROW(sc.returned(2, clock(0, 0), 1, 50, 50, 0), std::out_of_range);
  EXPECT_EQ(sc.returned(0, clock(1, 0), 2, 50, 53, 0), 5u);
  EXPECT_THROW(sc.returned(0, clock(1, 0), 1, 50, 50, 0), std::logic_error);  // none in flight
  std::uint64_t seq;
  std::vector<std::uint64_t> from, to;
  EXPECT_EQ(sc.in_flight(1), 1u);
  EXPECT_FALSE(sc.cut_record(seq, from, to));
  EXPECT_EQ(sc.next_record(), 5u);  // the first input given starts the records
}
