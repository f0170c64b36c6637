#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;

TEST(TokenBuckets, BurstThenRate) {
  auto s = std::make_shared<state::SharedState>();
  auto tb = s->token_buckets("tb", 1, 1000.0, 5);  // 1 ms per token, burst 5
  auto ctx = s->context(0, state::Mode::kLogged, 0);
  std::vector<std::uint64_t> b(8, 0), now(8, 1'000'000'000), p(8);
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint64_t>(i);
  tb->consume(*ctx, b, now, {}, p, out);
  EXPECT_EQ(std::vector<std::uint8_t>(out.begin(), out.end()), (std::vector<std::uint8_t>{1, 1, 1, 1, 1, 0, 0, 0}));
  std::vector<std::uint64_t> later(1, 1'000'000'000 + 2'000'000);
  std::vector<std::uint8_t> o1(1);
  tb->consume(*ctx, std::vector<std::uint64_t>{0}, later, {}, std::vector<std::uint64_t>{9}, o1);
  EXPECT_EQ(o1[0], 1);
  EXPECT_EQ(ctx->log().position(), 9u);
  EXPECT_THROW(s->token_buckets("x", 1, 0.0, 1), std::invalid_argument);
}

TEST(TokenBuckets, ThreadsNeverExceedBurstAtOneInstant) {
  auto s = std::make_shared<state::SharedState>();
  auto tb = s->token_buckets("tb", 1, 1.0, 100);
  std::atomic<int> allowed{0};
  std::vector<std::thread> th;
  for (int t = 0; t < 4; ++t) {
    th.emplace_back([&, t] {
      auto ctx = s->context(static_cast<std::uint16_t>(t), state::Mode::kLogged, 0);
      std::vector<std::uint64_t> b(1000, 0), now(1000, 5'000'000'000ull), p(1000, 0);
      std::vector<std::uint8_t> out(1000);
      tb->consume(*ctx, b, now, {}, p, out);
      int n = 0;
      for (auto o : out) n += o;
      allowed += n;
    });
  }
  for (auto& x : th) x.join();
  EXPECT_EQ(allowed.load(), 100);
}
