#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "vnfkit/ftlog/output_commit.hpp"

using namespace vnfkit::ftlog;

TEST(OutputCommit, RandomLateBurstyOutOfOrderAcksNeverReleaseEarly) {
  for (int run = 0; run < 50; ++run) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(run));
    constexpr std::size_t kT = 3;
    OutputCommit oc(kT, 2);
    std::vector<std::vector<std::uint64_t>> clock_of;
    std::vector<std::uint64_t> tagged[2], released[2];
    std::vector<std::vector<bool>> stable(kT, std::vector<bool>(64, false));
    std::vector<std::pair<std::size_t, std::uint64_t>> acks;
    for (std::size_t t = 0; t < kT; ++t) {
      for (std::uint64_t p = 0; p < 64; p += 8) acks.emplace_back(t, p);
    }
    std::shuffle(acks.begin(), acks.end(), rng);
    std::size_t next_ack = 0;
    auto prefix = [&](std::size_t t) {
      std::uint64_t p = 0;
      while (p < 64 && stable[t][p]) ++p;
      return p;
    };
    for (int step = 0; step < 100; ++step) {
      const auto what = rng() % 3;
      if (what == 0) {
        const std::size_t q = rng() % 2;
        std::vector<std::uint64_t> clk(kT), ids(1 + rng() % 3);
        for (auto& c : clk) c = rng() % 65;
        for (auto& id : ids) {
          id = clock_of.size();
          clock_of.push_back(clk);
          tagged[q].push_back(id);
        }
        oc.tag(q, ids, clk);
      } else if (what == 1 && next_ack < acks.size()) {
        const std::size_t burst = 1 + rng() % 4;
        for (std::size_t b = 0; b < burst && next_ack < acks.size(); ++b, ++next_ack) {
          auto [t, first] = acks[next_ack];
          oc.ack_range(t, first, 8);
          for (std::uint64_t p = first; p < first + 8; ++p) stable[t][p] = true;
        }
      } else {
        const std::size_t q = rng() % 2;
        std::vector<std::uint64_t> out;
        oc.release(q, out);
        for (auto id : out) {
          for (std::size_t t = 0; t < kT; ++t) ASSERT_LE(clock_of[id][t], prefix(t));
          released[q].push_back(id);
        }
        ASSERT_EQ(std::vector<std::uint64_t>(tagged[q].begin(), tagged[q].begin() + static_cast<std::ptrdiff_t>(released[q].size())), released[q]);
      }
    }
    for (std::size_t t = 0; t < kT; ++t) {
      EXPECT_EQ(oc.acked(t), prefix(t));
      oc.ack(t, 64);
    }
    for (std::size_t q = 0; q < 2; ++q) {
      std::vector<std::uint64_t> out;
      oc.release(q, out);
      released[q].insert(released[q].end(), out.begin(), out.end());
      EXPECT_EQ(released[q], tagged[q]);
    }
  }
}
