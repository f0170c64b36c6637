#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;

TEST(Replay, RegistersCasRaceReplaysAndTamperingDiverges) {
  auto s = std::make_shared<state::SharedState>();
  auto reg = s->registers("r", 2, 0);
  const auto snap = s->snapshot();
  constexpr int kThreads = 3, kN = 300;
  std::vector<std::vector<std::uint32_t>> outs(kThreads, std::vector<std::uint32_t>(kN));
  std::vector<std::vector<std::uint8_t>> chunks(kThreads);
  std::vector<std::thread> th;
  auto inputs = [](int t, int i, std::uint64_t& slot, std::uint32_t& exp, std::uint32_t& des, std::uint64_t& pid) {
    slot = static_cast<std::uint64_t>(i % 2);
    exp = static_cast<std::uint32_t>(i % 5);
    des = static_cast<std::uint32_t>(i % 5 + 1);
    pid = static_cast<std::uint64_t>(t * 100000 + i);
  };
  for (int t = 0; t < kThreads; ++t) {
    th.emplace_back([&, t] {
      auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 0);
      for (int i = 0; i < kN; ++i) {
        std::uint64_t slot, pid;
        std::uint32_t e, d;
        inputs(t, i, slot, e, d, pid);
        reg->access(*ctx, i % 3 ? state::RegOp::kCas : state::RegOp::kAdd, {&slot, 1}, {&e, 1}, {&d, 1}, {&pid, 1},
                    {&outs[t][i], 1});
      }
      chunks[t] = ctx->log().drain_chunk(static_cast<std::uint16_t>(t));
    });
  }
  for (auto& x : th) x.join();
  const auto fin = s->snapshot();
  auto replay = [&](std::vector<ftlog::Chunk> parsed) {
    auto s2 = std::make_shared<state::SharedState>();
    auto r2 = s2->registers("r", 2, 0);
    s2->restore(snap);
    ftlog::Replayer rp(s2, std::move(parsed));
    for (int t = 0; t < kThreads; ++t) {
      auto ctx = rp.context(static_cast<std::uint16_t>(t));
      for (int i = 0; i < kN; ++i) {
        std::uint64_t slot, pid;
        std::uint32_t e, d, o;
        inputs(t, i, slot, e, d, pid);
        r2->access(*ctx, i % 3 ? state::RegOp::kCas : state::RegOp::kAdd, {&slot, 1}, {&e, 1}, {&d, 1}, {&pid, 1}, {&o, 1});
        EXPECT_EQ(o, outs[t][i]);
      }
    }
    rp.finish();
    return s2->snapshot();
  };
  std::vector<ftlog::Chunk> parsed;
  for (auto& c : chunks) parsed.push_back(ftlog::parse_chunks(c).at(0));
  EXPECT_EQ(replay(parsed), fin);
  // Tamper: swap the versions two successful mutations observed -> inconsistent chain.
  auto bad = parsed;
  for (auto& r : bad[0].records) {
    if (r.flags & 1) {
      r.value += 1ull << 32;
      break;
    }
  }
  EXPECT_THROW(replay(bad), ftlog::DivergenceError);
  // Truncate: the execution asks for more than the log has.
  auto cut = parsed;
  cut[1].records.pop_back();
  EXPECT_THROW(replay(cut), ftlog::DivergenceError);
}

TEST(Replay, DivergenceMessageNamesPacketAndVariable) {
  auto s = std::make_shared<state::SharedState>();
  auto c = s->counters("hits", 4, false);
  auto ctx = s->context(0, state::Mode::kLogged, 0);
  std::vector<std::uint64_t> k{1}, p{42}, o(1);
  std::vector<std::int64_t> d{1};
  c->add(*ctx, k, d, p, o);
  auto chunk = ctx->log().drain_chunk(0);
  auto s2 = std::make_shared<state::SharedState>();
  auto c2 = s2->counters("hits", 4, false);
  ftlog::Replayer rp(s2, ftlog::parse_chunks(chunk));
  auto rc = rp.context(0);
  std::vector<std::uint64_t> k2{2};
  try {
    c2->add(*rc, k2, d, p, o);
    FAIL() << "no divergence";
  } catch (const ftlog::DivergenceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("packet 42"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'hits'[1]"), std::string::npos) << msg;
  }
}
