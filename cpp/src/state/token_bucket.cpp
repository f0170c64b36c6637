#include "vnfkit/state/token_bucket.hpp"

#include <algorithm>
#include <cmath>
#include <new>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

using ftlog::Determinant;
using ftlog::Op;

TokenBuckets::Params TokenBuckets::Params::validated() const {
  if (buckets == 0 || buckets > (1ull << 31)) throw std::invalid_argument("buckets: must be in [1, 2^31]");
  if (!(rate_per_s > 0.0) || rate_per_s > 1e9) throw std::invalid_argument("rate_per_s: must be in (0, 1e9]");
  if (!(burst >= 1.0) || burst > 4294967295.0) throw std::invalid_argument("burst: must be in [1, 2^32)");
  if (std::round(1e9 / rate_per_s) > 1e15) throw std::invalid_argument("rate_per_s: too small (more than 1e6 s per token)");
  return *this;
}

std::string TokenBuckets::Params::describe() const {
  return "token_buckets(buckets=" + std::to_string(buckets) + ", rate_per_s=" + std::to_string(rate_per_s) +
         ", burst=" + std::to_string(burst) + ")";
}

std::size_t TokenBuckets::storage_bytes(const Params& p) { return sizeof(Header) + p.buckets * sizeof(std::uint64_t); }

void TokenBuckets::format(void* mem, const Params& p) {
  const double interval = std::round(1e9 / p.rate_per_s);
  const auto iv = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(interval));
  auto* h = new (mem) Header{p.buckets, iv, static_cast<std::uint64_t>(std::floor(p.burst)) * iv, p.rate_per_s, p.burst};
  auto* t = reinterpret_cast<std::atomic<std::uint64_t>*>(h + 1);
  for (std::size_t i = 0; i < p.buckets; ++i) new (&t[i]) std::atomic<std::uint64_t>(0);
}

TokenBuckets::TokenBuckets(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep)
    : SharedObject(std::move(name), id),
      keep_(std::move(keep)),
      hdr_(static_cast<Header*>(mem)),
      n_(static_cast<std::size_t>(hdr_->buckets)),
      interval_(hdr_->interval),
      tolerance_(hdr_->tolerance),
      tat_(reinterpret_cast<std::atomic<std::uint64_t>*>(hdr_ + 1)) {}

std::string TokenBuckets::slot_name(std::uint32_t slot) const {
  return "'" + name() + "'[bucket " + std::to_string(slot) + "]";
}

bool TokenBuckets::decide(std::uint64_t tat, std::uint64_t now, std::uint32_t cost, std::uint64_t& next) const noexcept {
  const std::uint64_t t = std::max(tat, now);
  std::uint64_t add = 0, nx = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(cost), interval_, &add)) return false;
  if (__builtin_add_overflow(t, add, &nx)) return false;
  if (nx - now > tolerance_) return false;
  next = nx;
  return true;
}

void TokenBuckets::consume(Context& ctx, std::span<const std::uint64_t> buckets, std::span<const std::uint64_t> now_ns,
                           std::span<const std::uint32_t> costs, std::span<const std::uint64_t> packet_ids,
                           std::span<std::uint8_t> out) {
  const std::size_t n = buckets.size();
  if (now_ns.size() != n) throw std::invalid_argument("now_ns: length must equal buckets");
  if (packet_ids.size() != n) throw std::invalid_argument("packet_ids: length must equal buckets");
  if (!costs.empty() && costs.size() != n) throw std::invalid_argument("costs: length must equal buckets");
  if (out.size() != n) throw std::invalid_argument("out: length must equal buckets");
  for (auto b : buckets) {
    if (b >= n_) throw std::invalid_argument("buckets: bucket " + std::to_string(b) + " out of range [0, " + std::to_string(n_) + ")");
  }
  const bool logged = ctx.mode() == Mode::kLogged;
  if (ctx.mode() == Mode::kReplay) {
    for (std::size_t i = 0; i < n; ++i) {
      const Determinant& r = ctx.replay_next(packet_ids[i], id(), Op::kBucketConsume);
      if (r.slot != buckets[i]) ctx.diverge(r, "the execution asks for bucket " + std::to_string(buckets[i]));
      const std::uint32_t cost = costs.empty() ? 1u : costs[i];
      std::uint64_t next = 0;
      const bool ok = decide(r.value, now_ns[i], cost, next);
      if (ok != ((r.flags & 1) != 0)) ctx.diverge(r, "the logged allow/deny outcome does not follow from the logged bucket state");
      if (ok) {
        auto& a = tat_[r.slot];
        std::uint64_t cur = a.load(std::memory_order_relaxed);
        while (cur < next && !a.compare_exchange_weak(cur, next, std::memory_order_relaxed)) {
        }
      }
      out[i] = ok ? 1 : 0;
      ctx.observe(Observation{id(), Op::kBucketConsume, static_cast<std::uint8_t>(ok ? 1 : 0), r.slot, r.value, next, 0});
    }
    return;
  }
  Determinant* rec = logged ? ctx.log().reserve(n) : nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    auto& a = tat_[buckets[i]];
    const std::uint32_t cost = costs.empty() ? 1u : costs[i];
    std::uint64_t old = a.load(std::memory_order_relaxed);
    bool ok = false;
    for (;;) {
      std::uint64_t next = 0;
      ok = decide(old, now_ns[i], cost, next);
      if (!ok || a.compare_exchange_weak(old, next, std::memory_order_relaxed)) break;
    }
    out[i] = ok ? 1 : 0;
    if (logged) {
      rec[i] = Determinant{packet_ids[i], id(), Op::kBucketConsume, static_cast<std::uint8_t>(ok ? 1 : 0),
                           static_cast<std::uint32_t>(buckets[i]), old};
    }
  }
  if (logged) ctx.log().commit(n);
}

double TokenBuckets::tokens(std::uint64_t bucket, std::uint64_t now_ns) const {
  if (bucket >= n_) throw std::invalid_argument("bucket: out of range");
  const std::uint64_t tat = std::max(tat_[bucket].load(std::memory_order_relaxed), now_ns);
  const double used = static_cast<double>(tat - now_ns);
  return (static_cast<double>(tolerance_) - used) / static_cast<double>(interval_);
}

std::vector<std::uint8_t> TokenBuckets::snapshot() const {
  snapshot::Writer w("token_buckets");
  w.put<std::uint64_t>(n_);
  w.put<std::uint64_t>(interval_);
  w.put<std::uint64_t>(tolerance_);
  w.reserve(8 + n_ * sizeof(std::uint64_t));
  std::uint8_t* t = w.put_array_space<std::uint64_t>(n_);
  for (std::size_t i = 0; i < n_; ++i) {
    const std::uint64_t x = tat_[i].load();
    std::memcpy(t + i * sizeof x, &x, sizeof x);
  }
  return w.finish();
}

void TokenBuckets::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader r(image, "token_buckets");
  const auto n = r.get<std::uint64_t>();
  const auto interval = r.get<std::uint64_t>();
  const auto tolerance = r.get<std::uint64_t>();
  if (n != n_ || interval != interval_ || tolerance != tolerance_) {
    throw snapshot::SnapshotError("token_buckets '" + name() + "': snapshot configuration (buckets, rate, burst) differs");
  }
  auto t = r.get_array<std::uint64_t>(n_);
  r.expect_end();
  if (t.size() != n_) throw snapshot::SnapshotError("token_buckets: wrong number of buckets");
  for (std::size_t i = 0; i < n_; ++i) tat_[i].store(t[i]);
}

void TokenBuckets::replay_begin() {
  replay_start_.resize(n_);
  for (std::size_t i = 0; i < n_; ++i) replay_start_[i] = tat_[i].load();
}

void TokenBuckets::replay_finish(std::span<const Observation> obs) {
  // Allowed consumptions must chain: {start} + nexts == olds + {final}; denials saw a chain value.
  std::vector<Observation> o(obs.begin(), obs.end());
  std::stable_sort(o.begin(), o.end(), [](const Observation& a, const Observation& b) { return a.slot < b.slot; });
  std::vector<std::uint64_t> olds, nexts, denied;
  for (std::size_t i = 0; i < o.size();) {
    const std::uint32_t s = o[i].slot;
    olds.clear();
    nexts.clear();
    denied.clear();
    for (; i < o.size() && o[i].slot == s; ++i) {
      if (o[i].flags & 1) {
        olds.push_back(o[i].logged);
        nexts.push_back(o[i].arg0);
      } else {
        denied.push_back(o[i].logged);
      }
    }
    nexts.push_back(replay_start_[s]);
    olds.push_back(tat_[s].load());
    std::sort(olds.begin(), olds.end());
    std::sort(nexts.begin(), nexts.end());
    if (olds != nexts) fail("bucket " + std::to_string(s) + ": the logged bucket states do not form one sequence");
    for (auto v : denied) {
      if (!std::binary_search(nexts.begin(), nexts.end(), v)) fail("bucket " + std::to_string(s) + ": a denial saw a state the bucket never had");
    }
  }
  replay_start_.clear();
}

}  // namespace vnfkit::state
