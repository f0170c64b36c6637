// Shared aggregate state in a POSIX shared-memory arena: declare-or-map across attachments,
// parameter mismatches, fixed-size logs, and a fork()-based race of two worker processes whose
// logs (read from the segment after they exited) replay to the same values and final image.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/state/shared_state.hpp"

using namespace vnfkit;

namespace {

bool segment_exists(const std::string& name) { return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

// Every test gets a fresh segment name; TearDown asserts nothing is left under /dev/shm and
// removes it anyway so a failing test cannot leak it.
class Shm : public ::testing::Test {
 protected:
  void SetUp() override {
    static int seq = 0;
    name_ = "vnfkit-gtest-" + std::to_string(::getpid()) + "-" + std::to_string(++seq);
  }
  void TearDown() override {
    const bool left = segment_exists(name_);
    ::shm_unlink(("/" + name_).c_str());
    EXPECT_FALSE(left) << "segment " << name_ << " left behind";
  }
  std::string name_;
};

constexpr int kWorkers = 2;
constexpr int kBatches = 20;
constexpr int kBatch = 256;
constexpr std::uint16_t kLo = 20000, kHi = 20999;  // 1000 ports, 2 sub-pools

std::vector<std::uint16_t> subpools() {
  std::vector<std::uint16_t> s(kHi - kLo + 1);
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::uint16_t>(i % 2);
  return s;
}

struct Vars {
  std::shared_ptr<state::Counters> hits;
  std::shared_ptr<state::Counters> per_key;
  std::shared_ptr<state::PortPool> pool;
};

Vars declare(state::SharedState& s) {
  const auto sub = subpools();
  return {s.counters("hits", 64, false), s.counters("per_key", 512, true), s.port_pool("ports", kLo, kHi, sub)};
}

struct Returned {
  std::vector<std::uint64_t> hits, per_key;
  std::vector<std::uint16_t> ports;
  std::vector<std::uint8_t> released;
};

// The deterministic workload of worker w, batch b (inputs only depend on (w, b)).
void inputs(int w, int b, std::vector<std::uint64_t>& keys, std::vector<std::int64_t>& deltas, std::vector<std::uint64_t>& pids) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(w * 1000 + b));
  keys.resize(kBatch);
  deltas.resize(kBatch);
  pids.resize(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    keys[i] = rng() % 300;
    deltas[i] = static_cast<std::int64_t>(rng() % 5) + 1;
    pids[i] = (static_cast<std::uint64_t>(w) << 40) | static_cast<std::uint64_t>(b * kBatch + i);
  }
}

// One batch of accesses; allocates 16 ports from the worker's sub-pool and releases every other
// one it got (and, in later batches, some ports it got earlier).
void step(const Vars& v, state::Context& ctx, int w, int b, std::vector<std::uint16_t>& held, Returned& r) {
  std::vector<std::uint64_t> keys, pids;
  std::vector<std::int64_t> deltas;
  inputs(w, b, keys, deltas, pids);
  std::vector<std::uint64_t> slot(kBatch), out(kBatch), outk(kBatch);
  for (int i = 0; i < kBatch; ++i) slot[i] = keys[i] % 64;
  v.hits->add(ctx, slot, deltas, pids, out);
  v.per_key->add(ctx, keys, deltas, pids, outk);
  r.hits.insert(r.hits.end(), out.begin(), out.end());
  r.per_key.insert(r.per_key.end(), outk.begin(), outk.end());
  std::vector<std::uint16_t> sub(16, static_cast<std::uint16_t>(w)), ports(16);
  v.pool->allocate(ctx, {pids.data(), 16}, sub, ports);
  r.ports.insert(r.ports.end(), ports.begin(), ports.end());
  std::vector<std::uint16_t> rel;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (ports[i] == 0) continue;
    if (i % 2) rel.push_back(ports[i]);
    else held.push_back(ports[i]);
  }
  if (held.size() > 8) {
    rel.push_back(held.front());
    held.erase(held.begin());
  }
  std::vector<std::uint8_t> ok(rel.size());
  v.pool->release(ctx, rel, {pids.data() + 16, rel.size()}, ok);
  r.released.insert(r.released.end(), ok.begin(), ok.end());
}

}  // namespace

TEST(ShmArena, AtomicsAreAddressFree) {
  EXPECT_TRUE(std::atomic<std::uint64_t>::is_always_lock_free);
  EXPECT_TRUE(std::atomic<std::uint32_t>::is_always_lock_free);
}

TEST_F(Shm, DeclareCreatesOrMapsAndMismatchesNameTheVariable) {
  auto a = state::SharedState::create_shm(name_, 8 << 20);
  EXPECT_TRUE(segment_exists(name_));
  EXPECT_TRUE(a->arena().is_owner());
  auto c = a->counters("x", 16, false);
  auto pool = a->port_pool("p", 100, 199);
  auto b = state::SharedState::attach_shm(name_);  // a second mapping, as another process would have
  EXPECT_FALSE(b->arena().is_owner());
  EXPECT_EQ(b->size(), 2u);
  auto cb = b->counters("x", 16, false);
  EXPECT_EQ(cb->id(), c->id());
  auto ctx = a->context(0, state::Mode::kUnlogged, 1);
  std::vector<std::uint64_t> k{3, 3}, pid{1, 2}, out(2);
  std::vector<std::int64_t> d{5, 6};
  c->add(*ctx, k, d, pid, out);
  EXPECT_EQ(cb->get(3), 11u);
  EXPECT_THROW(b->counters("x", 32, false), std::invalid_argument);
  EXPECT_THROW(b->registers("x", 16, 0), std::invalid_argument);
  std::vector<std::uint16_t> sub(100, 0);
  sub[7] = 1;
  try {
    b->port_pool("p", 100, 199, sub);
    FAIL() << "mismatched sub-pools accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'p'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(b->port_pool("p", 100, 199)->id(), pool->id());
  auto r = b->registers("r", 4, 9);  // declared in b, visible in a
  EXPECT_EQ(a->object(r->id())->name(), "r");
  EXPECT_EQ(a->snapshot(), b->snapshot());
  EXPECT_THROW(state::SharedState::create_shm(name_, 8 << 20), std::invalid_argument);
  a->close();
  EXPECT_FALSE(segment_exists(name_));
  EXPECT_EQ(cb->get(3), 11u);  // still mapped
  EXPECT_THROW(state::SharedState::attach_shm(name_), std::invalid_argument);
  EXPECT_THROW(a->counters("y", 4, false), std::invalid_argument);
}

TEST_F(Shm, BadNamesAndSizesAreRejected) {
  EXPECT_THROW(state::SharedState::create_shm("x", 8 << 20), std::invalid_argument);
  EXPECT_THROW(state::SharedState::create_shm("vnfkit-a/b", 8 << 20), std::invalid_argument);
  EXPECT_THROW(state::SharedState::create_shm(name_, 100), std::invalid_argument);
  EXPECT_FALSE(segment_exists(name_));
  auto a = state::SharedState::create_shm(name_, 1 << 20);
  EXPECT_THROW(a->counters("big", 1 << 20, false), std::invalid_argument);  // 16 MiB > 1 MiB: arena full
  EXPECT_EQ(a->size(), 0u);
}

TEST_F(Shm, FullLogRaisesBeforeAnyEffectAndIsCounted) {
  state::ShmLimits l;
  l.log_records = 64;
  auto a = state::SharedState::create_shm(name_, 8 << 20, l);
  auto c = a->counters("x", 4, false);
  auto ctx = a->context(0, state::Mode::kLogged, 1);
  EXPECT_TRUE(ctx->log().fixed());
  std::vector<std::uint64_t> k(40, 1), pid(40), out(40);
  std::vector<std::int64_t> d(40, 1);
  c->add(*ctx, k, d, pid, out);
  EXPECT_THROW(c->add(*ctx, k, d, pid, out), ftlog::LogFullError);
  EXPECT_EQ(c->get(1), 40u);
  EXPECT_EQ(ctx->log().full_events(), 1u);
  ctx->log().drain_chunk(0);
  c->add(*ctx, k, d, pid, out);
  EXPECT_EQ(c->get(1), 80u);
  EXPECT_EQ(ctx->log().position(), 80u);
}

TEST_F(Shm, TwoForkedWorkersRaceExactlyAndTheirLogsReplay) {
  auto s = state::SharedState::create_shm(name_, 32 << 20);
  Vars v = declare(*s);
  const auto snap0 = s->snapshot();
  std::vector<pid_t> kids;
  for (int w = 0; w < kWorkers; ++w) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        auto mine = state::SharedState::attach_shm(name_);  // a worker maps the segment itself
        Vars mv = declare(*mine);
        auto ctx = mine->context(static_cast<std::uint16_t>(w), state::Mode::kLogged, 7);
        std::vector<std::uint16_t> held;
        Returned r;
        for (int b = 0; b < kBatches; ++b) step(mv, *ctx, w, b, held, r);
      } catch (...) {
        rc = 3;
      }
      ::_exit(rc);  // leaves its log in the segment, as a dead worker would
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int st = 0;
    ASSERT_EQ(::waitpid(k, &st, 0), k);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "worker failed";
  }
  // Exact totals.
  std::vector<std::uint64_t> want_hits(64, 0);
  std::map<std::uint64_t, std::uint64_t> want_keys;
  for (int w = 0; w < kWorkers; ++w) {
    for (int b = 0; b < kBatches; ++b) {
      std::vector<std::uint64_t> keys, pids;
      std::vector<std::int64_t> deltas;
      inputs(w, b, keys, deltas, pids);
      for (int i = 0; i < kBatch; ++i) {
        want_hits[keys[i] % 64] += static_cast<std::uint64_t>(deltas[i]);
        want_keys[keys[i]] += static_cast<std::uint64_t>(deltas[i]);
      }
    }
  }
  for (std::size_t i = 0; i < 64; ++i) EXPECT_EQ(v.hits->get(i), want_hits[i]);
  for (auto [k, n] : want_keys) EXPECT_EQ(v.per_key->get(k), n);
  // Logs read from the segment after the workers are gone; ports handed out never twice at once.
  std::vector<ftlog::Chunk> chunks;
  for (int w = 0; w < kWorkers; ++w) {
    std::vector<ftlog::Determinant> recs;
    const auto first = s->read_log(static_cast<std::uint16_t>(w), 0, recs);
    EXPECT_EQ(first, 0u);
    EXPECT_FALSE(recs.empty());
    chunks.push_back({static_cast<std::uint16_t>(w), first, recs});
  }
  EXPECT_EQ(s->positions().size(), static_cast<std::size_t>(kWorkers));
  const auto final_image = s->snapshot();

  auto backup = std::make_shared<state::SharedState>();  // heap: replay needs no shared memory
  Vars bv = declare(*backup);
  backup->restore(snap0);
  ftlog::Replayer rp(backup, chunks);
  std::set<std::uint16_t> allocated_at_end;
  for (int w = 0; w < kWorkers; ++w) {
    auto ctx = rp.context(static_cast<std::uint16_t>(w));
    std::vector<std::uint16_t> held;
    Returned r;
    for (int b = 0; b < kBatches; ++b) step(bv, *ctx, w, b, held, r);
    // The replayed values are the logged ones: check the counter outputs against the log records.
    std::size_t hi = 0, ki = 0, pi = 0;
    for (const auto& rec : chunks[static_cast<std::size_t>(w)].records) {
      if (rec.object == v.hits->id()) {
        EXPECT_EQ(r.hits[hi++], rec.value);
      } else if (rec.object == v.per_key->id()) {
        EXPECT_EQ(r.per_key[ki++], rec.value);
      } else if (rec.object == v.pool->id() && rec.op == ftlog::Op::kPoolAlloc) {
        EXPECT_EQ(r.ports[pi++], rec.slot);
      }
    }
    EXPECT_EQ(hi, r.hits.size());
    EXPECT_EQ(pi, r.ports.size());
    for (auto p : held) allocated_at_end.insert(p);
  }
  rp.finish();
  EXPECT_EQ(backup->snapshot(), final_image);
  EXPECT_EQ(v.pool->allocated_count(), allocated_at_end.size());
  s->close();
}
