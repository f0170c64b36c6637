#include "vnfkit/state/counters.hpp"

#include <algorithm>
#include <bit>
#include <new>
#include <stdexcept>
#include <string>

#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

using ftlog::Determinant;
using ftlog::Op;

namespace {
std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  return x ^ (x >> 33);
}
}  // namespace

Counters::Params Counters::Params::validated() const {
  if (slots == 0 || slots > (1ull << 31)) throw std::invalid_argument("slots: must be in [1, 2^31]");
  return {keyed ? std::bit_ceil(slots) : slots, keyed};
}

std::string Counters::Params::describe() const {
  return "counters(slots=" + std::to_string(slots) + ", keyed=" + (keyed ? "True" : "False") + ")";
}

std::size_t Counters::storage_bytes(const Params& p) { return sizeof(Header) + p.slots * sizeof(Slot); }

void Counters::format(void* mem, const Params& p) {
  auto* h = new (mem) Header{p.slots, p.keyed ? 1u : 0u, {}};
  h->full.store(0, std::memory_order_relaxed);
  auto* s = reinterpret_cast<Slot*>(h + 1);
  for (std::size_t i = 0; i < p.slots; ++i) {
    new (&s[i]) Slot{};
    s[i].key.store(kEmptyKey, std::memory_order_relaxed);
    s[i].value.store(0, std::memory_order_relaxed);
  }
}

Counters::Counters(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep)
    : SharedObject(std::move(name), id),
      keep_(std::move(keep)),
      hdr_(static_cast<Header*>(mem)),
      n_(static_cast<std::size_t>(hdr_->slots)),
      mask_(n_ - 1),
      keyed_(hdr_->keyed != 0),
      slots_(reinterpret_cast<Slot*>(hdr_ + 1)),
      full_(hdr_->full) {}

std::string Counters::slot_name(std::uint32_t slot) const {
  if (slot == kNoSlot) return "'" + name() + "'[table full]";
  if (keyed_ && slot < n_) {
    const auto k = slots_[slot].key.load(std::memory_order_relaxed);
    if (k != kEmptyKey) return "'" + name() + "'[key " + std::to_string(k) + "]";
  }
  return "'" + name() + "'[" + std::to_string(slot) + "]";
}

void Counters::validate(std::span<const std::uint64_t> keys, std::size_t n_pids, std::size_t n_out) const {
  if (n_pids != keys.size()) throw std::invalid_argument("packet_ids: length must equal keys");
  if (n_out != keys.size()) throw std::invalid_argument("out: length must equal keys");
  if (keyed_) {
    for (auto k : keys) {
      if (k == kEmptyKey) throw std::invalid_argument("keys: 2^64-1 is reserved and not a valid key");
    }
  } else {
    for (auto k : keys) {
      if (k >= n_) throw std::invalid_argument("keys: key " + std::to_string(k) + " out of range [0, " + std::to_string(n_) + ")");
    }
  }
}

std::uint32_t Counters::find_or_claim(std::uint64_t key) noexcept {
  std::size_t s = mix(key) & mask_;
  for (std::size_t probe = 0, limit = std::min(n_, kMaxProbe); probe < limit; ++probe, s = (s + 1) & mask_) {
    std::uint64_t k = slots_[s].key.load(std::memory_order_acquire);
    if (k == key) return static_cast<std::uint32_t>(s);
    if (k == kEmptyKey) {
      if (slots_[s].key.compare_exchange_strong(k, key, std::memory_order_acq_rel)) return static_cast<std::uint32_t>(s);
      if (k == key) return static_cast<std::uint32_t>(s);
    }
  }
  return kNoSlot;
}

std::uint32_t Counters::find(std::uint64_t key) const noexcept {
  std::size_t s = mix(key) & mask_;
  for (std::size_t probe = 0, limit = std::min(n_, kMaxProbe); probe < limit; ++probe, s = (s + 1) & mask_) {
    const std::uint64_t k = slots_[s].key.load(std::memory_order_acquire);
    if (k == key) return static_cast<std::uint32_t>(s);
    if (k == kEmptyKey) return kNoSlot;
  }
  return kNoSlot;
}

std::uint32_t Counters::replay_slot(Context& ctx, const Determinant& rec, std::uint64_t key) {
  if (!keyed_) {
    if (rec.slot != key) ctx.diverge(rec, "the execution asks for key " + std::to_string(key));
    return rec.slot;
  }
  if (rec.slot == kNoSlot) return kNoSlot;
  if (rec.slot >= n_) ctx.diverge(rec, "logged slot is out of range");
  std::uint64_t k = slots_[rec.slot].key.load(std::memory_order_acquire);
  if (k == key) return rec.slot;
  if (k == kEmptyKey && slots_[rec.slot].key.compare_exchange_strong(k, key)) return rec.slot;
  if (k == key) return rec.slot;
  ctx.diverge(rec, "the execution asks for key " + std::to_string(key) + " but the logged slot holds key " +
                       std::to_string(k));
}

void Counters::add(Context& ctx, std::span<const std::uint64_t> keys, std::span<const std::int64_t> deltas,
                   std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out) {
  validate(keys, packet_ids.size(), out.size());
  if (deltas.size() != keys.size()) throw std::invalid_argument("deltas: length must equal keys");
  const std::size_t n = keys.size();
  auto slot_of = [this](std::uint64_t k) { return keyed_ ? find_or_claim(k) : static_cast<std::uint32_t>(k); };
  switch (ctx.mode()) {
    case Mode::kUnlogged:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t s = slot_of(keys[i]);
        if (s == kNoSlot) {
          out[i] = kFull;
          full_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        const auto d = static_cast<std::uint64_t>(deltas[i]);
        out[i] = slots_[s].value.fetch_add(d, std::memory_order_relaxed) + d;
      }
      break;
    case Mode::kLogged: {
      Determinant* rec = ctx.log().reserve(n);
      const std::uint16_t obj = id();
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t s = slot_of(keys[i]);
        std::uint64_t v = kFull;
        if (s == kNoSlot) {
          full_.fetch_add(1, std::memory_order_relaxed);
        } else {
          const auto d = static_cast<std::uint64_t>(deltas[i]);
          v = slots_[s].value.fetch_add(d, std::memory_order_relaxed) + d;
        }
        out[i] = v;
        rec[i] = Determinant{packet_ids[i], obj, Op::kCounterAdd, 0, s, v};
      }
      ctx.log().commit(n);
      break;
    }
    case Mode::kReplay:
      for (std::size_t i = 0; i < n; ++i) {
        const Determinant& r = ctx.replay_next(packet_ids[i], id(), Op::kCounterAdd);
        const std::uint32_t s = replay_slot(ctx, r, keys[i]);
        if (s == kNoSlot) {
          if (r.value != kFull) ctx.diverge(r, "a full-table outcome must return the sentinel");
          full_.fetch_add(1, std::memory_order_relaxed);
          out[i] = kFull;
          continue;
        }
        const auto d = static_cast<std::uint64_t>(deltas[i]);
        slots_[s].value.fetch_add(d, std::memory_order_relaxed);
        out[i] = r.value;
        ctx.observe(Observation{id(), Op::kCounterAdd, 0, s, r.value, d, 0});
      }
      break;
  }
}

void Counters::read(Context& ctx, std::span<const std::uint64_t> keys, std::span<const std::uint64_t> packet_ids,
                    std::span<std::uint64_t> out) {
  validate(keys, packet_ids.size(), out.size());
  const std::size_t n = keys.size();
  auto slot_of = [this](std::uint64_t k) { return keyed_ ? find(k) : static_cast<std::uint32_t>(k); };
  switch (ctx.mode()) {
    case Mode::kUnlogged:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t s = slot_of(keys[i]);
        out[i] = s == kNoSlot ? 0 : slots_[s].value.load(std::memory_order_relaxed);
      }
      break;
    case Mode::kLogged: {
      Determinant* rec = ctx.log().reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t s = slot_of(keys[i]);
        const std::uint64_t v = s == kNoSlot ? 0 : slots_[s].value.load(std::memory_order_relaxed);
        out[i] = v;
        rec[i] = Determinant{packet_ids[i], id(), Op::kCounterRead, 0, s, v};
      }
      ctx.log().commit(n);
      break;
    }
    case Mode::kReplay:
      for (std::size_t i = 0; i < n; ++i) {
        const Determinant& r = ctx.replay_next(packet_ids[i], id(), Op::kCounterRead);
        if (r.slot != kNoSlot) {
          const std::uint32_t s = replay_slot(ctx, r, keys[i]);
          ctx.observe(Observation{id(), Op::kCounterRead, 0, s, r.value, 0, 0});
        } else if (r.value != 0) {
          ctx.diverge(r, "a read of an absent key must return 0");
        }
        out[i] = r.value;
      }
      break;
  }
}

std::uint64_t Counters::get(std::uint64_t key) const {
  if (!keyed_) {
    if (key >= n_) throw std::invalid_argument("key: out of range");
    return slots_[key].value.load(std::memory_order_relaxed);
  }
  if (key == kEmptyKey) throw std::invalid_argument("key: 2^64-1 is reserved");
  const auto s = find(key);
  return s == kNoSlot ? 0 : slots_[s].value.load(std::memory_order_relaxed);
}

void Counters::items(std::vector<std::uint64_t>& keys, std::vector<std::uint64_t>& values) const {
  keys.clear();
  values.clear();
  for (std::size_t s = 0; s < n_; ++s) {
    const auto k = keyed_ ? slots_[s].key.load(std::memory_order_relaxed) : s;
    if (k == kEmptyKey) continue;
    keys.push_back(k);
    values.push_back(slots_[s].value.load(std::memory_order_relaxed));
  }
}

std::vector<std::uint8_t> Counters::snapshot() const {
  snapshot::Writer w("counters");
  w.put<std::uint64_t>(n_);
  w.put<std::uint8_t>(keyed_ ? 1 : 0);
  w.put<std::uint64_t>(full_.load());
  w.reserve(2 * (8 + n_ * sizeof(std::uint64_t)));
  std::uint8_t* k = w.put_array_space<std::uint64_t>(n_);
  for (std::size_t s = 0; s < n_; ++s) {
    const std::uint64_t x = slots_[s].key.load();
    std::memcpy(k + s * sizeof x, &x, sizeof x);
  }
  std::uint8_t* v = w.put_array_space<std::uint64_t>(n_);
  for (std::size_t s = 0; s < n_; ++s) {
    const std::uint64_t x = slots_[s].value.load();
    std::memcpy(v + s * sizeof x, &x, sizeof x);
  }
  return w.finish();
}

void Counters::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader r(image, "counters");
  const auto n = r.get<std::uint64_t>();
  const auto keyed = r.get<std::uint8_t>();
  if (n != n_ || (keyed != 0) != keyed_) {
    throw snapshot::SnapshotError("counters '" + name() + "': snapshot has " + std::to_string(n) + (keyed ? " keyed" : "") +
                                  " slots, this object has " + std::to_string(n_) + (keyed_ ? " keyed" : ""));
  }
  const auto full = r.get<std::uint64_t>();
  auto k = r.get_array<std::uint64_t>(n_);
  auto v = r.get_array<std::uint64_t>(n_);
  r.expect_end();
  if (k.size() != n_ || v.size() != n_) throw snapshot::SnapshotError("counters: slot arrays have the wrong length");
  full_.store(full);
  for (std::size_t s = 0; s < n_; ++s) {
    slots_[s].key.store(keyed_ ? k[s] : kEmptyKey);
    slots_[s].value.store(v[s]);
  }
}

void Counters::replay_begin() {
  replay_start_.resize(n_);
  for (std::size_t s = 0; s < n_; ++s) replay_start_[s] = slots_[s].value.load();
}

void Counters::replay_finish(std::span<const Observation> obs) {
  // Per slot, the logged accesses must form one valid interleaving (ftlog::check_chain): an order
  // consistent with every thread's program order in which each add's pre-value (logged post-value
  // minus its delta) is what the previous access left and each read returns it, from the
  // snapshot's value to the final one.
  std::vector<Observation> o(obs.begin(), obs.end());
  std::stable_sort(o.begin(), o.end(), [](const Observation& a, const Observation& b) {
    return a.slot != b.slot ? a.slot < b.slot : a.thread < b.thread;  // stable: program order kept
  });
  std::vector<std::vector<ftlog::ChainStep>> threads;
  for (std::size_t i = 0; i < o.size();) {
    const std::uint32_t s = o[i].slot;
    threads.clear();
    std::size_t j = i;
    for (; j < o.size() && o[j].slot == s; ++j) {
      if (j == i || o[j].thread != o[j - 1].thread) threads.emplace_back();
      const std::uint64_t post = o[j].logged;
      threads.back().push_back(ftlog::ChainStep{o[j].op == Op::kCounterAdd ? post - o[j].arg0 : post, post});
    }
    const std::uint64_t start = s < replay_start_.size() ? replay_start_[s] : 0;
    const std::uint64_t fin = slots_[s].value.load();
    const ftlog::ChainResult r = ftlog::check_chain(start, fin, threads);
    // Past the search bound (values that recur across many threads), the multiset check decides.
    if (!r.ok && !(r.gave_up && ftlog::check_chain_multiset(start, fin, threads))) {
      fail("slot " + slot_name(s) + ": the logged values do not form one sequence of additions in any order " +
           "consistent with each thread's own order (from " + std::to_string(start) + " to " + std::to_string(fin) +
           ": " + std::to_string(r.placed) + " of " + std::to_string(r.total) + " accesses chain, then none saw " +
           std::to_string(r.stuck_at) + (r.gave_up ? "; search bound reached" : "") + ")");
    }
    i = j;
  }
  replay_start_.clear();
}

}  // namespace vnfkit::state
