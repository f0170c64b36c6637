// ftlog::check_chain: the per-variable "one valid interleaving" check of replay, and its use by
// Counters::replay_finish (tampered logs that a per-slot multiset comparison would accept).
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;
using ftlog::ChainStep;
using Threads = std::vector<std::vector<ChainStep>>;

namespace {
bool chains(std::uint64_t start, std::uint64_t fin, const Threads& t) { return ftlog::check_chain(start, fin, t).ok; }
}  // namespace

TEST(ChainCheck, InterleavedAddsChain) {
  // thread 0: 0->1, 2->3; thread 1: 1->2, 3->4
  EXPECT_TRUE(chains(0, 4, {{{0, 1}, {2, 3}}, {{1, 2}, {3, 4}}}));
  EXPECT_TRUE(chains(7, 7, {{}, {}}));
  EXPECT_FALSE(chains(7, 8, {{}, {}}));
}

TEST(ChainCheck, AddOfZeroMustSeeAValueOnTheChain) {
  EXPECT_TRUE(chains(0, 2, {{{0, 1}, {1, 1}, {1, 2}}}));        // add 0 at 1: fine
  EXPECT_FALSE(chains(0, 2, {{{0, 1}, {123456, 123456}, {1, 2}}}));  // "saw" 123456: never held
  EXPECT_FALSE(chains(0, 2, {{{0, 1}, {1, 2}}, {{123456, 123456}}}));  // in another thread too
}

TEST(ChainCheck, ProgramOrderIsRespected) {
  // As a multiset these chain (0->1, 1->2, 2->3), but thread 0 would have to run backwards.
  EXPECT_FALSE(chains(0, 3, {{{2, 3}, {0, 1}}, {{1, 2}}}));
  EXPECT_TRUE(chains(0, 3, {{{0, 1}, {2, 3}}, {{1, 2}}}));
  // A read must see the value at a point its thread allows: thread 0 reads 2 before adding 0->1.
  EXPECT_FALSE(chains(0, 2, {{{2, 2}, {0, 1}}, {{1, 2}}}));
}

TEST(ChainCheck, RecurringValuesNeedTheSearchAndFindTheOrder) {
  // +5 / -5 counters: both threads' first adds saw 10. Trying thread 0 first dead-ends (10->15->20,
  // then nobody saw 20); only thread 1 first (10->15->10, then thread 0: 10->15->20) works.
  EXPECT_TRUE(chains(10, 20, {{{10, 15}, {15, 20}}, {{10, 15}, {15, 10}}}));
  EXPECT_FALSE(chains(10, 25, {{{10, 15}, {15, 20}}, {{10, 15}, {15, 10}}}));
  // a fake +5/-5 pair detached from the chain (10->15, 15->10 beside 0->1) is refused
  EXPECT_FALSE(chains(0, 1, {{{0, 1}}, {{10, 15}, {15, 10}}}));
}

TEST(ChainCheck, GivesUpAtTheBoundAndSaysSo) {
  // Many threads all doing +1/-1 from 0: any interleaving works, but make the end impossible so
  // the search has to exhaust; a tiny bound must report gave_up, not a pass.
  Threads t(8, std::vector<ChainStep>{{0, 1}, {1, 0}});
  const auto r = ftlog::check_chain(0, 5, t, 16);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.gave_up);
  EXPECT_TRUE(ftlog::check_chain(0, 0, t).ok);
}

TEST(ChainCheck, LongUnbranchedChainIsLinear) {
  // 2 threads x 500 000 alternating adds: one forced step at a time, no search.
  Threads t(2);
  for (std::uint64_t v = 0; v < 1'000'000; ++v) t[v % 2].push_back({v * 3, v * 3 + 3});
  const auto r = ftlog::check_chain(0, 3'000'000, t);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.placed, 1'000'000u);
}

namespace {
// One thread's log, tampered by `mutate`, replayed against the same inputs.
void replay_counters(const std::vector<std::uint8_t>& snap, std::vector<std::vector<ftlog::Determinant>> logs,
                     const std::vector<std::vector<std::int64_t>>& deltas) {
  auto s2 = std::make_shared<state::SharedState>();
  auto c2 = s2->counters("hits", 4, false);
  s2->restore(snap);
  std::vector<ftlog::Chunk> chunks;
  for (std::size_t t = 0; t < logs.size(); ++t) chunks.push_back(ftlog::Chunk{static_cast<std::uint16_t>(t), 0, logs[t]});
  ftlog::Replayer rp(s2, std::move(chunks));
  for (std::size_t t = 0; t < logs.size(); ++t) {
    auto ctx = rp.context(static_cast<std::uint16_t>(t));
    for (std::size_t i = 0; i < deltas[t].size(); ++i) {
      const std::uint64_t key = 0, pid = logs[t][i].packet_id;
      std::uint64_t out = 0;
      c2->add(*ctx, {&key, 1}, {&deltas[t][i], 1}, {&pid, 1}, {&out, 1});
    }
  }
  rp.finish();
}
}  // namespace

TEST(ChainCheck, CounterReplayRefusesTamperedLogsAMultisetAccepts) {
  auto s = std::make_shared<state::SharedState>();
  auto c = s->counters("hits", 4, false);
  const auto snap = s->snapshot();
  // thread 0: +1, +0, +1; thread 1: +1 -- run one after the other (a valid interleaving)
  const std::vector<std::vector<std::int64_t>> deltas = {{1, 0, 1}, {1}};
  std::vector<std::vector<ftlog::Determinant>> logs(2);
  for (std::size_t t = 0; t < 2; ++t) {
    auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 0);
    for (std::size_t i = 0; i < deltas[t].size(); ++i) {
      const std::uint64_t key = 0, pid = t * 100 + i;
      std::uint64_t out = 0;
      c->add(*ctx, {&key, 1}, {&deltas[t][i], 1}, {&pid, 1}, {&out, 1});
    }
    const auto chunk = ctx->log().drain_chunk(static_cast<std::uint16_t>(t));
    logs[t] = ftlog::parse_chunks(chunk).at(0).records;
  }
  EXPECT_NO_THROW(replay_counters(snap, logs, deltas));
  auto fake_zero = logs;
  fake_zero[0][1].value = 123456;  // the add of 0 "saw" 123456: pre == post, a multiset balances it
  EXPECT_THROW(replay_counters(snap, fake_zero, deltas), ftlog::DivergenceError);
  auto backwards = logs;
  std::swap(backwards[0][0].value, backwards[0][2].value);  // thread 0's adds in the wrong order
  EXPECT_THROW(replay_counters(snap, backwards, deltas), ftlog::DivergenceError);
}
