#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;

TEST(PortPool, ThreadsNeverGetTheSamePortAndExhaustionIsCounted) {
  auto s = std::make_shared<state::SharedState>();
  auto pool = s->port_pool("p", 50000, 50999);
  constexpr int kThreads = 4, kN = 400;  // 1600 requests for 1000 ports
  std::vector<std::vector<std::uint16_t>> got(kThreads, std::vector<std::uint16_t>(kN));
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t) {
    th.emplace_back([&, t] {
      auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 0);
      std::vector<std::uint64_t> p(kN);
      for (int i = 0; i < kN; ++i) p[i] = static_cast<std::uint64_t>(t * kN + i);
      for (int i = 0; i < kN; i += 50) pool->allocate(*ctx, {p.data() + i, 50}, {}, {got[t].data() + i, 50});
    });
  }
  for (auto& x : th) x.join();
  std::set<std::uint16_t> seen;
  std::size_t zeros = 0;
  for (auto& g : got) {
    for (auto port : g) {
      if (port == 0) {
        ++zeros;
      } else {
        EXPECT_TRUE(seen.insert(port).second) << "port " << port << " handed out twice";
      }
    }
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(zeros, 600u);
  EXPECT_EQ(pool->exhausted_events(), 600u);
  EXPECT_EQ(pool->allocated_count(), 1000u);
  EXPECT_EQ(pool->free_count(0), 0u);
}

TEST(PortPool, AllocateReleaseChurnReplays) {
  auto s = std::make_shared<state::SharedState>();
  auto pool = s->port_pool("p", 100, 163);
  const auto snap = s->snapshot();
  constexpr int kThreads = 3, kRounds = 200;
  std::vector<std::vector<std::uint8_t>> chunks(kThreads);
  std::vector<std::vector<std::uint16_t>> outs(kThreads);
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t) {
    th.emplace_back([&, t] {
      auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 0);
      for (int r = 0; r < kRounds; ++r) {
        std::vector<std::uint64_t> p{static_cast<std::uint64_t>(t * 1000 + r)};
        std::vector<std::uint16_t> port(1);
        std::vector<std::uint8_t> ok(1);
        pool->allocate(*ctx, p, {}, port);
        outs[t].push_back(port[0]);
        if (port[0]) pool->release(*ctx, port, p, ok);
      }
      chunks[t] = ctx->log().drain_chunk(static_cast<std::uint16_t>(t));
    });
  }
  for (auto& x : th) x.join();
  EXPECT_EQ(pool->allocated_count(), 0u);
  const auto fin = s->snapshot();
  auto s2 = std::make_shared<state::SharedState>();
  auto p2 = s2->port_pool("p", 100, 163);
  s2->restore(snap);
  std::vector<ftlog::Chunk> parsed;
  for (auto& c : chunks) parsed.push_back(ftlog::parse_chunks(c).at(0));
  ftlog::Replayer rp(s2, parsed);
  for (int t = 0; t < kThreads; ++t) {
    auto ctx = rp.context(static_cast<std::uint16_t>(t));
    for (int r = 0; r < kRounds; ++r) {
      std::vector<std::uint64_t> p{static_cast<std::uint64_t>(t * 1000 + r)};
      std::vector<std::uint16_t> port(1);
      std::vector<std::uint8_t> ok(1);
      p2->allocate(*ctx, p, {}, port);
      ASSERT_EQ(port[0], outs[t][r]);
      if (port[0]) p2->release(*ctx, port, p, ok);
    }
  }
  rp.finish();
  EXPECT_EQ(s2->snapshot(), fin);
}

TEST(PortPool, SubpoolsAndValidation) {
  auto s = std::make_shared<state::SharedState>();
  std::vector<std::uint16_t> sub{0, 1, 0, 1};
  auto pool = s->port_pool("p", 10, 13, sub);
  auto ctx = s->context(0, state::Mode::kUnlogged, 0);
  std::vector<std::uint64_t> p{1, 2, 3};
  std::vector<std::uint16_t> want{1, 1, 1}, out(3);
  pool->allocate(*ctx, p, want, out);
  EXPECT_EQ(std::set<std::uint16_t>(out.begin(), out.end()), (std::set<std::uint16_t>{0, 11, 13}));
  EXPECT_THROW(s->port_pool("q", 0, 5), std::invalid_argument);
  EXPECT_THROW(s->port_pool("r", 5, 4), std::invalid_argument);
  std::vector<std::uint16_t> outside{9};
  std::vector<std::uint8_t> ok(1);
  EXPECT_THROW(pool->release(*ctx, outside, std::vector<std::uint64_t>{0}, ok), std::invalid_argument);
}
