// TimerWheel: exact expiry (fires iff deadline <= now) whatever the tick and wheel size, lazy
// re-arming, wrap-around of far deadlines, and older `now` values.
#include "vnfkit/flow/timer_wheel.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

using vnfkit::flow::kNever;
using vnfkit::flow::TimerWheel;

namespace {

struct Model {
  std::vector<std::uint64_t> deadline;
  std::vector<bool> live;
};

std::vector<std::uint32_t> advance(TimerWheel& w, Model& m, std::uint64_t now) {
  std::vector<std::uint32_t> fired;
  w.advance(
      now, [&](std::uint32_t id) { return m.live[id] ? m.deadline[id] : kNever; },
      [&](std::uint32_t id) {
        fired.push_back(id);
        m.live[id] = false;
      });
  std::sort(fired.begin(), fired.end());
  return fired;
}

}  // namespace

TEST(TimerWheel, RejectsBadConfig) {
  EXPECT_THROW(TimerWheel(4, 0), std::invalid_argument);
  EXPECT_THROW(TimerWheel(4, 10, 100), std::invalid_argument);
}

TEST(TimerWheel, FiresExactlyWhenDue) {
  TimerWheel w(3, 10, 8);
  Model m{{25, 95, 1000}, {true, true, true}};
  for (std::uint32_t i = 0; i < 3; ++i) w.arm(i, m.deadline[i]);
  EXPECT_TRUE(advance(w, m, 24).empty());
  EXPECT_EQ(advance(w, m, 25), (std::vector<std::uint32_t>{0}));
  EXPECT_TRUE(advance(w, m, 94).empty());
  EXPECT_EQ(advance(w, m, 999), (std::vector<std::uint32_t>{1}));  // 1000 wraps the 80 ns wheel
  EXPECT_EQ(advance(w, m, 1000), (std::vector<std::uint32_t>{2}));
  EXPECT_FALSE(w.armed(2));
}

TEST(TimerWheel, LazyExtensionAndEarlierRearm) {
  TimerWheel w(2, 10, 8);
  Model m{{50, 50}, {true, true}};
  w.arm(0, 50);
  w.arm(1, 50);
  m.deadline[0] = 500;  // extended without re-arming: the wheel re-links it when it gets there
  EXPECT_EQ(advance(w, m, 60), (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(w.armed(0));
  m.deadline[0] = 70;  // moved earlier: the owner must re-arm
  w.arm(0, 70);
  EXPECT_EQ(advance(w, m, 70), (std::vector<std::uint32_t>{0}));
}

TEST(TimerWheel, DisarmAndNever) {
  TimerWheel w(2, 1, 4);
  Model m{{5, kNever}, {true, true}};
  w.arm(0, 5);
  w.arm(1, kNever);
  EXPECT_FALSE(w.armed(1));
  w.disarm(0);
  EXPECT_TRUE(advance(w, m, 100).empty());
}

TEST(TimerWheel, RandomisedAgainstModel) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 20; ++round) {
    const std::size_t n = 64;
    TimerWheel w(n, 1 + rng() % 50, std::size_t{1} << (rng() % 6));
    Model m{std::vector<std::uint64_t>(n, kNever), std::vector<bool>(n, false)};
    std::uint64_t now = 0;
    for (int step = 0; step < 400; ++step) {
      const auto id = static_cast<std::uint32_t>(rng() % n);
      switch (rng() % 4) {
        case 0:  // arm / re-arm
          m.deadline[id] = now + rng() % 3000;
          m.live[id] = true;
          w.arm(id, m.deadline[id]);
          break;
        case 1:  // lazy extension of a live timer
          if (m.live[id]) m.deadline[id] += rng() % 500;
          break;
        default: {
          const std::uint64_t to = (rng() % 8 == 0 && now > 100) ? now - 100 : now + rng() % 400;
          std::vector<std::uint32_t> want;
          for (std::uint32_t i = 0; i < n; ++i) {
            if (m.live[i] && m.deadline[i] <= to) want.push_back(i);
          }
          EXPECT_EQ(advance(w, m, to), want);
          now = std::max(now, to);
        }
      }
    }
  }
}
