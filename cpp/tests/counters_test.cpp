#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;

TEST(Counters, ThreadsRaceExactTotalsAndReplayReproducesEverything) {
  for (int run = 0; run < 5; ++run) {
    auto s = std::make_shared<state::SharedState>();
    auto direct = s->counters("direct", 16, false);
    auto keyed = s->counters("keyed", 256, true);
    const auto snap0 = s->snapshot();
    constexpr int kThreads = 4, kN = 4000;
    std::vector<std::vector<std::uint64_t>> keys(kThreads), pids(kThreads), out_d(kThreads), out_k(kThreads);
    std::vector<std::vector<std::int64_t>> deltas(kThreads);
    std::vector<std::vector<std::uint8_t>> chunks(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      std::mt19937_64 rng(static_cast<std::uint64_t>(run * 100 + t));
      for (int i = 0; i < kN; ++i) {
        keys[t].push_back(rng() % 100);
        deltas[t].push_back(static_cast<std::int64_t>(rng() % 7) - 2);
        pids[t].push_back(static_cast<std::uint64_t>(t) << 32 | static_cast<std::uint64_t>(i));
      }
      out_d[t].resize(kN);
      out_k[t].resize(kN);
    }
    std::vector<std::thread> th;
    for (int t = 0; t < kThreads; ++t) {
      th.emplace_back([&, t] {
        auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 1);
        std::vector<std::uint64_t> dk(kN);
        for (int i = 0; i < kN; ++i) dk[i] = keys[t][i] % 16;
        for (int i = 0; i < kN; i += 500) {
          direct->add(*ctx, {dk.data() + i, 500}, {deltas[t].data() + i, 500}, {pids[t].data() + i, 500}, {out_d[t].data() + i, 500});
          keyed->add(*ctx, {keys[t].data() + i, 500}, {deltas[t].data() + i, 500}, {pids[t].data() + i, 500}, {out_k[t].data() + i, 500});
        }
        chunks[t] = ctx->log().drain_chunk(static_cast<std::uint16_t>(t));
      });
    }
    for (auto& x : th) x.join();
    std::map<std::uint64_t, std::int64_t> ref;
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 0; i < kN; ++i) ref[keys[t][i]] += deltas[t][i];
    }
    for (auto [k, v] : ref) EXPECT_EQ(static_cast<std::int64_t>(keyed->get(k)), v);
    const auto final_image = s->snapshot();

    auto s2 = std::make_shared<state::SharedState>();
    auto d2 = s2->counters("direct", 16, false);
    auto k2 = s2->counters("keyed", 256, true);
    s2->restore(snap0);
    std::vector<ftlog::Chunk> parsed;
    for (auto& c : chunks) {
      auto p = ftlog::parse_chunks(c);
      parsed.insert(parsed.end(), p.begin(), p.end());
    }
    ftlog::Replayer rp(s2, parsed);
    for (int t = kThreads - 1; t >= 0; --t) {
      auto ctx = rp.context(static_cast<std::uint16_t>(t));
      std::vector<std::uint64_t> dk(kN), od(kN), ok(kN);
      for (int i = 0; i < kN; ++i) dk[i] = keys[t][i] % 16;
      for (int i = 0; i < kN; i += 500) {
        d2->add(*ctx, {dk.data() + i, 500}, {deltas[t].data() + i, 500}, {pids[t].data() + i, 500}, {od.data() + i, 500});
        k2->add(*ctx, {keys[t].data() + i, 500}, {deltas[t].data() + i, 500}, {pids[t].data() + i, 500}, {ok.data() + i, 500});
      }
      EXPECT_EQ(od, out_d[t]);
      EXPECT_EQ(ok, out_k[t]);
    }
    rp.finish();
    EXPECT_EQ(s2->snapshot(), final_image);
  }
}

TEST(Counters, KeyedTableFullIsReportedAndValidationRejects) {
  auto s = std::make_shared<state::SharedState>();
  auto c = s->counters("c", 2, true);
  auto ctx = s->context(0, state::Mode::kUnlogged, 0);
  std::vector<std::uint64_t> k{1, 2, 3}, p{0, 1, 2}, out(3);
  std::vector<std::int64_t> d{1, 1, 1};
  c->add(*ctx, k, d, p, out);
  EXPECT_EQ(out[2], state::Counters::kFull);
  EXPECT_EQ(c->full_events(), 1u);
  std::vector<std::uint64_t> bad{state::Counters::kEmptyKey};
  EXPECT_THROW(c->add(*ctx, bad, std::vector<std::int64_t>{1}, std::vector<std::uint64_t>{0}, std::span<std::uint64_t>(out.data(), 1)),
               std::invalid_argument);
  auto direct = s->counters("d", 4, false);
  std::vector<std::uint64_t> big{4};
  EXPECT_THROW(direct->add(*ctx, big, std::vector<std::int64_t>{1}, std::vector<std::uint64_t>{0}, std::span<std::uint64_t>(out.data(), 1)),
               std::invalid_argument);
  EXPECT_EQ(s->counters("d", 4, false), direct);  // the same declaration maps the same variable
  EXPECT_THROW(s->counters("d", 8, false), std::invalid_argument);
  EXPECT_THROW(s->registers("d", 4, 0), std::invalid_argument);
}

// A keyed table filled by two threads racing with twice as many keys as slots: every key that got
// a slot is found with both threads' adds, at least ~95 % of the slots are taken, and a key not in
// the table is refused after at most kMaxProbe slot reads, not a scan of every slot. The same
// holds after a snapshot is restored into a fresh table.
TEST(Counters, FullKeyedTableFindsEveryKeyAndMissesStopEarly) {
  constexpr std::size_t kSlots = 1 << 16;
  auto s = std::make_shared<state::SharedState>();
  auto c = s->counters("c", kSlots, true);
  std::vector<std::shared_ptr<state::Context>> ctxs{s->context(0, state::Mode::kUnlogged, 0),
                                                    s->context(1, state::Mode::kUnlogged, 0)};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      auto& ctx = ctxs[static_cast<std::size_t>(t)];
      std::vector<std::uint64_t> k(1), p{0}, out(1);
      std::vector<std::int64_t> d{1};
      for (std::uint64_t key = 0; key < 2 * kSlots; ++key) {  // both threads add every key
        k[0] = key * 0x9E3779B97F4A7C15ULL;
        c->add(*ctx, k, d, p, out);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<std::uint64_t> keys, values;
  c->items(keys, values);
  ASSERT_GE(keys.size(), kSlots * 95 / 100);
  ASSERT_LE(keys.size(), kSlots);
  std::map<std::uint64_t, std::uint64_t> seen;
  for (std::size_t i = 0; i < keys.size(); ++i) seen[keys[i]] = values[i];
  ASSERT_EQ(seen.size(), keys.size());  // each key in one slot
  for (const auto& [k, v] : seen) {
    ASSERT_EQ(v, 2u) << "key " << k;  // both threads' adds landed on the one slot of the key
    ASSERT_EQ(c->get(k), 2u);
  }
  auto& ctx = ctxs[0];
  // Timed against hits of keys in the table, in the same run (so a sanitizer's slower atomics
  // scale both): a miss reads at most kMaxProbe slots against ~20 for a hit here, not 65 536.
  auto timed = [&](state::Counters& t, bool hits) {
    std::vector<std::uint64_t> k(1), p{0}, out(1);
    std::vector<std::int64_t> d{0};
    std::size_t full = 0, tried = 0;
    auto it = seen.begin();
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < 20000; ++i) {
      if (hits) {
        k[0] = it->first;
        if (++it == seen.end()) it = seen.begin();
      } else {
        k[0] = (i + 7) * 0xC2B2AE3D27D4EB4FULL + 1;
        if (seen.count(k[0])) continue;
      }
      ++tried;
      t.add(*ctx, k, d, p, out);
      full += out[0] == state::Counters::kFull;
    }
    return std::tuple{full, tried, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  };
  const auto image = c->snapshot();
  auto check = [&](state::Counters& t) {
    auto [hit_full, hits, hit_s] = timed(t, true);
    EXPECT_EQ(hit_full, 0u);
    auto [full, tried, miss_s] = timed(t, false);
    EXPECT_GE(full, tried * 9 / 10);  // a few new keys may still find a free slot near home
    EXPECT_LT(miss_s / static_cast<double>(tried), 100 * hit_s / static_cast<double>(hits)) << "a miss on a full table costs a scan of every slot";
    return std::pair{full, tried};
  };
  const auto first = check(*c);
  auto s2 = std::make_shared<state::SharedState>();
  auto c2 = s2->counters("c", kSlots, true);
  c2->restore(image);
  for (const auto& [k, v] : seen) ASSERT_EQ(c2->get(k), v);
  EXPECT_EQ(check(*c2), first);  // the restored table refuses exactly what the original did
}
