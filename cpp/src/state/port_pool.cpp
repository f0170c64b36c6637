#include "vnfkit/state/port_pool.hpp"

#include <algorithm>
#include <new>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

using ftlog::Determinant;
using ftlog::Op;

PortPool::Params PortPool::Params::validated() const {
  if (lo == 0) throw std::invalid_argument("lo: port 0 is reserved (it means 'exhausted')");
  if (hi < lo) throw std::invalid_argument("hi: must be >= lo");
  const std::size_t n = static_cast<std::size_t>(hi - lo) + 1;
  if (!subpool_of.empty() && subpool_of.size() != n) {
    throw std::invalid_argument("subpool_of: needs one entry per port (" + std::to_string(n) + ")");
  }
  Params p{lo, hi, subpool_of};
  if (p.subpool_of.empty()) p.subpool_of.assign(n, 0);
  return p;
}

std::string PortPool::Params::describe() const {
  const std::size_t nsub =
      subpool_of.empty() ? 1 : static_cast<std::size_t>(*std::max_element(subpool_of.begin(), subpool_of.end())) + 1;
  return "port_pool(lo=" + std::to_string(lo) + ", hi=" + std::to_string(hi) + ", " + std::to_string(nsub) + " sub-pool(s))";
}

PortPool::Layout PortPool::layout(std::size_t n, std::size_t nsub) noexcept {
  Layout l{};
  l.subs = sizeof(Header);
  l.gen = l.subs + nsub * sizeof(Sub);
  l.sub_of = l.gen + n * sizeof(std::uint32_t);
  l.ports = l.sub_of + n * sizeof(std::uint16_t);
  l.bytes = l.ports + n * sizeof(std::uint16_t);
  return l;
}

std::size_t PortPool::storage_bytes(const Params& p) {
  const std::size_t nsub = static_cast<std::size_t>(*std::max_element(p.subpool_of.begin(), p.subpool_of.end())) + 1;
  return layout(p.subpool_of.size(), nsub).bytes;
}

void PortPool::format(void* mem, const Params& p) {
  const std::size_t n = p.subpool_of.size();
  const std::size_t nsub = static_cast<std::size_t>(*std::max_element(p.subpool_of.begin(), p.subpool_of.end())) + 1;
  const Layout l = layout(n, nsub);
  auto* base = static_cast<std::uint8_t*>(mem);
  auto* h = new (mem) Header{p.lo, p.hi, static_cast<std::uint32_t>(nsub), {}};
  h->exhausted.store(0, std::memory_order_relaxed);
  auto* subs = reinterpret_cast<Sub*>(base + l.subs);
  auto* gen = reinterpret_cast<std::atomic<std::uint32_t>*>(base + l.gen);
  auto* sub_of = reinterpret_cast<std::uint16_t*>(base + l.sub_of);
  auto* ports = reinterpret_cast<std::uint16_t*>(base + l.ports);
  std::vector<std::uint32_t> count(nsub, 0);
  for (auto s : p.subpool_of) ++count[s];
  std::uint32_t at = 0;
  for (std::size_t s = 0; s < nsub; ++s) {
    new (&subs[s]) Sub{{}, {}, at, count[s]};
    subs[s].free.store(count[s], std::memory_order_relaxed);
    subs[s].cursor.store(0, std::memory_order_relaxed);
    at += count[s];
  }
  std::vector<std::uint32_t> fill(nsub, 0);
  for (std::size_t i = 0; i < n; ++i) {
    new (&gen[i]) std::atomic<std::uint32_t>(0);
    const std::uint16_t s = p.subpool_of[i];
    sub_of[i] = s;
    ports[subs[s].first + fill[s]++] = static_cast<std::uint16_t>(p.lo + i);
  }
}

PortPool::PortPool(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep)
    : SharedObject(std::move(name), id),
      keep_(std::move(keep)),
      hdr_(static_cast<Header*>(mem)),
      lo_(hdr_->lo),
      hi_(hdr_->hi),
      n_(static_cast<std::size_t>(hi_ - lo_) + 1),
      exhausted_(hdr_->exhausted) {
  const Layout l = layout(n_, hdr_->nsub);
  auto* base = static_cast<std::uint8_t*>(mem);
  subs_ = {reinterpret_cast<Sub*>(base + l.subs), hdr_->nsub};
  gen_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base + l.gen);
  sub_of_ = {reinterpret_cast<const std::uint16_t*>(base + l.sub_of), n_};
  ports_ = reinterpret_cast<const std::uint16_t*>(base + l.ports);
}

PortPool::Params PortPool::params() const {
  return {lo_, hi_, std::vector<std::uint16_t>(sub_of_.begin(), sub_of_.end())};
}

std::string PortPool::slot_name(std::uint32_t slot) const {
  if (slot == 0) return "'" + name() + "'[exhausted]";
  return "'" + name() + "'[port " + std::to_string(slot) + "]";
}

void PortPool::recount() noexcept {
  std::vector<std::int64_t> free(subs_.size(), 0);
  for (std::size_t i = 0; i < sub_of_.size(); ++i) {
    if ((gen_[i].load(std::memory_order_relaxed) & 1u) == 0) ++free[sub_of_[i]];
  }
  for (std::size_t s = 0; s < subs_.size(); ++s) subs_[s].free.store(free[s]);
}

void PortPool::allocate(Context& ctx, std::span<const std::uint64_t> packet_ids, std::span<const std::uint16_t> subpool,
                        std::span<std::uint16_t> out) {
  const std::size_t n = packet_ids.size();
  if (out.size() != n) throw std::invalid_argument("out: length must equal packet_ids");
  if (!subpool.empty()) {
    if (subpool.size() != n) throw std::invalid_argument("subpool: length must equal packet_ids");
    for (auto s : subpool) {
      if (s >= subs_.size()) throw std::invalid_argument("subpool: sub-pool " + std::to_string(s) + " does not exist");
    }
  }
  if (ctx.mode() == Mode::kReplay) {
    for (std::size_t i = 0; i < n; ++i) {
      const Determinant& r = ctx.replay_next(packet_ids[i], id(), Op::kPoolAlloc);
      const std::uint16_t want = subpool.empty() ? 0 : subpool[i];
      if (r.slot == kExhausted) {
        exhausted_.fetch_add(1, std::memory_order_relaxed);
        out[i] = kExhausted;
        continue;
      }
      if (r.slot < lo_ || r.slot > hi_) ctx.diverge(r, "logged port is outside the pool");
      const std::size_t idx = index(static_cast<std::uint16_t>(r.slot));
      if (sub_of_[idx] != want) ctx.diverge(r, "the execution asks for sub-pool " + std::to_string(want));
      if (r.value & 1u) ctx.diverge(r, "logged generation says the port was not free");
      gen_[idx].fetch_add(1, std::memory_order_relaxed);
      subs_[want].free.fetch_sub(1, std::memory_order_relaxed);
      ctx.observe(Observation{id(), Op::kPoolAlloc, 0, r.slot, r.value, 0, 0});
      out[i] = static_cast<std::uint16_t>(r.slot);
    }
    return;
  }
  const bool logged = ctx.mode() == Mode::kLogged;
  Determinant* rec = logged ? ctx.log().reserve(n) : nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    Sub& sp = subs_[subpool.empty() ? 0 : subpool[i]];
    std::uint16_t port = kExhausted;
    std::uint32_t g = 0;
    if (sp.free.fetch_sub(1, std::memory_order_acq_rel) <= 0) {
      sp.free.fetch_add(1, std::memory_order_relaxed);
      exhausted_.fetch_add(1, std::memory_order_relaxed);
    } else {
      // The reservation guarantees a free port exists in this sub-pool; scan from the hint.
      const std::size_t m = sp.count;
      const std::uint16_t* sports = ports_ + sp.first;
      std::size_t k = sp.cursor.load(std::memory_order_relaxed) % m;
      for (;;) {
        const std::uint16_t p = sports[k];
        auto& gw = gen_[index(p)];
        g = gw.load(std::memory_order_relaxed);
        if ((g & 1u) == 0 && gw.compare_exchange_strong(g, g + 1, std::memory_order_acq_rel)) {
          port = p;
          sp.cursor.store(static_cast<std::uint32_t>(k + 1 == m ? 0 : k + 1), std::memory_order_relaxed);
          break;
        }
        if (++k == m) k = 0;
      }
    }
    out[i] = port;
    if (logged) rec[i] = Determinant{packet_ids[i], id(), Op::kPoolAlloc, 0, port, port ? g : 0};
  }
  if (logged) ctx.log().commit(n);
}

void PortPool::release(Context& ctx, std::span<const std::uint16_t> ports, std::span<const std::uint64_t> packet_ids,
                       std::span<std::uint8_t> out) {
  const std::size_t n = ports.size();
  if (packet_ids.size() != n) throw std::invalid_argument("packet_ids: length must equal ports");
  if (out.size() != n) throw std::invalid_argument("out: length must equal ports");
  for (auto p : ports) {
    if (p < lo_ || p > hi_) {
      throw std::invalid_argument("ports: port " + std::to_string(p) + " is outside the pool [" + std::to_string(lo_) +
                                  ", " + std::to_string(hi_) + "]");
    }
  }
  if (ctx.mode() == Mode::kReplay) {
    for (std::size_t i = 0; i < n; ++i) {
      const Determinant& r = ctx.replay_next(packet_ids[i], id(), Op::kPoolRelease);
      if (r.slot != ports[i]) ctx.diverge(r, "the execution releases port " + std::to_string(ports[i]));
      const bool ok = (r.flags & 1) != 0;
      if (ok != ((r.value & 1u) != 0)) ctx.diverge(r, "logged outcome contradicts the logged generation");
      if (ok) {
        const std::size_t idx = index(ports[i]);
        gen_[idx].fetch_add(1, std::memory_order_relaxed);
        subs_[sub_of_[idx]].free.fetch_add(1, std::memory_order_relaxed);
      }
      ctx.observe(Observation{id(), Op::kPoolRelease, static_cast<std::uint8_t>(ok), r.slot, r.value, 0, 0});
      out[i] = ok ? 1 : 0;
    }
    return;
  }
  const bool logged = ctx.mode() == Mode::kLogged;
  Determinant* rec = logged ? ctx.log().reserve(n) : nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t idx = index(ports[i]);
    auto& gw = gen_[idx];
    std::uint32_t g = gw.load(std::memory_order_relaxed);
    bool ok = false;
    while ((g & 1u) != 0) {
      if (gw.compare_exchange_weak(g, g + 1, std::memory_order_acq_rel)) {
        ok = true;
        break;
      }
    }
    if (ok) subs_[sub_of_[idx]].free.fetch_add(1, std::memory_order_release);
    out[i] = ok ? 1 : 0;
    if (logged) rec[i] = Determinant{packet_ids[i], id(), Op::kPoolRelease, static_cast<std::uint8_t>(ok), ports[i], g};
  }
  if (logged) ctx.log().commit(n);
}

bool PortPool::is_allocated(std::uint16_t port) const {
  if (port < lo_ || port > hi_) throw std::invalid_argument("port: outside the pool");
  return (gen_[index(port)].load(std::memory_order_relaxed) & 1u) != 0;
}

std::size_t PortPool::free_count(std::size_t subpool) const {
  if (subpool >= subs_.size()) throw std::invalid_argument("subpool: does not exist");
  return static_cast<std::size_t>(std::max<std::int64_t>(0, subs_[subpool].free.load(std::memory_order_relaxed)));
}

std::size_t PortPool::allocated_count() const {
  std::size_t c = 0;
  for (std::size_t i = 0; i < sub_of_.size(); ++i) c += gen_[i].load(std::memory_order_relaxed) & 1u;
  return c;
}

std::vector<std::uint8_t> PortPool::snapshot() const {
  snapshot::Writer w("port_pool");
  w.put<std::uint16_t>(lo_);
  w.put<std::uint16_t>(hi_);
  w.put<std::uint64_t>(exhausted_.load());
  const std::size_t n = sub_of_.size();
  w.reserve(16 + n * (sizeof(std::uint16_t) + sizeof(std::uint32_t)));
  w.put_array<std::uint16_t>({sub_of_.data(), n});
  std::uint8_t* g = w.put_array_space<std::uint32_t>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t x = gen_[i].load();
    std::memcpy(g + i * sizeof x, &x, sizeof x);
  }
  return w.finish();
}

void PortPool::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader r(image, "port_pool");
  const auto lo = r.get<std::uint16_t>();
  const auto hi = r.get<std::uint16_t>();
  const auto exhausted = r.get<std::uint64_t>();
  const auto sub_of = r.get_array<std::uint16_t>(sub_of_.size());
  const auto g = r.get_array<std::uint32_t>(sub_of_.size());
  r.expect_end();
  if (lo != lo_ || hi != hi_ || !std::equal(sub_of.begin(), sub_of.end(), sub_of_.begin(), sub_of_.end()) ||
      g.size() != sub_of_.size()) {
    throw snapshot::SnapshotError("port_pool '" + name() + "': snapshot has a different range or sub-pool layout");
  }
  exhausted_.store(exhausted);
  for (std::size_t i = 0; i < g.size(); ++i) gen_[i].store(g[i]);
  recount();
}

void PortPool::replay_begin() {
  replay_start_.resize(sub_of_.size());
  for (std::size_t i = 0; i < sub_of_.size(); ++i) replay_start_[i] = gen_[i].load();
}

void PortPool::replay_finish(std::span<const Observation> obs) {
  // Per port, the mutations must have observed generations start, start+1, ..., start+k-1
  // (allocations at even ones, releases at odd ones); failed releases saw an even one in range.
  std::vector<Observation> o(obs.begin(), obs.end());
  std::stable_sort(o.begin(), o.end(), [](const Observation& a, const Observation& b) { return a.slot < b.slot; });
  std::vector<std::pair<std::uint32_t, bool>> muts;
  std::vector<std::uint32_t> failed;
  for (std::size_t i = 0; i < o.size();) {
    const std::uint32_t port = o[i].slot;
    muts.clear();
    failed.clear();
    for (; i < o.size() && o[i].slot == port; ++i) {
      const auto g = static_cast<std::uint32_t>(o[i].logged);
      if (o[i].op == Op::kPoolAlloc) {
        muts.emplace_back(g, true);
      } else if (o[i].flags & 1) {
        muts.emplace_back(g, false);
      } else {
        failed.push_back(g);
      }
    }
    const std::uint32_t start = replay_start_[index(static_cast<std::uint16_t>(port))];
    std::sort(muts.begin(), muts.end());
    for (std::size_t k = 0; k < muts.size(); ++k) {
      if (muts[k].first != start + static_cast<std::uint32_t>(k)) {
        fail("port " + std::to_string(port) + ": logged generations are not one sequence (a port handed out twice, or a log tampered with)");
      }
      if (muts[k].second != ((muts[k].first & 1u) == 0)) fail("port " + std::to_string(port) + ": allocation and release do not alternate");
    }
    for (auto g : failed) {
      if ((g & 1u) || g - start > muts.size()) fail("port " + std::to_string(port) + ": a failed release saw a generation the port never had");
    }
  }
  replay_start_.clear();
}

}  // namespace vnfkit::state
