#include "vnfkit/state/register.hpp"

#include <algorithm>
#include <new>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

using ftlog::Determinant;
using ftlog::Op;

namespace {
constexpr std::uint64_t pack(std::uint32_t ver, std::uint32_t val) noexcept {
  return (static_cast<std::uint64_t>(ver) << 32) | val;
}
constexpr std::uint32_t ver_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
constexpr std::uint32_t val_of(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w); }

Op to_op(RegOp op) noexcept {
  switch (op) {
    case RegOp::kLoad: return Op::kRegLoad;
    case RegOp::kStore: return Op::kRegStore;
    case RegOp::kExchange: return Op::kRegExchange;
    case RegOp::kAdd: return Op::kRegAdd;
    case RegOp::kCas: return Op::kRegCas;
  }
  return Op::kNone;
}

// New value for an access that saw `old`; false if the access does not modify the register.
bool effect(RegOp op, std::uint32_t old, std::uint32_t a, std::uint32_t b, std::uint32_t& out) noexcept {
  switch (op) {
    case RegOp::kLoad: return false;
    case RegOp::kStore:
    case RegOp::kExchange: out = a; return true;
    case RegOp::kAdd: out = old + a; return true;
    case RegOp::kCas:
      if (old != a) return false;
      out = b;
      return true;
  }
  return false;
}
}  // namespace

Registers::Params Registers::Params::validated() const {
  if (slots == 0 || slots > (1ull << 31)) throw std::invalid_argument("slots: must be in [1, 2^31]");
  return *this;
}

std::string Registers::Params::describe() const {
  return "registers(slots=" + std::to_string(slots) + ", initial=" + std::to_string(initial) + ")";
}

std::size_t Registers::storage_bytes(const Params& p) { return sizeof(Header) + p.slots * sizeof(std::uint64_t); }

void Registers::format(void* mem, const Params& p) {
  auto* h = new (mem) Header{p.slots, p.initial};
  auto* w = reinterpret_cast<std::atomic<std::uint64_t>*>(h + 1);
  for (std::size_t i = 0; i < p.slots; ++i) new (&w[i]) std::atomic<std::uint64_t>(pack(0, p.initial));
}

Registers::Registers(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep)
    : SharedObject(std::move(name), id),
      keep_(std::move(keep)),
      hdr_(static_cast<Header*>(mem)),
      n_(static_cast<std::size_t>(hdr_->slots)),
      word_(reinterpret_cast<std::atomic<std::uint64_t>*>(hdr_ + 1)) {}

void Registers::access(Context& ctx, RegOp op, std::span<const std::uint64_t> slots, std::span<const std::uint32_t> a,
                       std::span<const std::uint32_t> b, std::span<const std::uint64_t> packet_ids,
                       std::span<std::uint32_t> out) {
  const std::size_t n = slots.size();
  if (packet_ids.size() != n) throw std::invalid_argument("packet_ids: length must equal slots");
  if (out.size() != n) throw std::invalid_argument("out: length must equal slots");
  if (op != RegOp::kLoad && a.size() != n) throw std::invalid_argument("values: length must equal slots");
  if (op == RegOp::kCas && b.size() != n) throw std::invalid_argument("desired: length must equal slots");
  for (auto s : slots) {
    if (s >= n_) throw std::invalid_argument("slots: slot " + std::to_string(s) + " out of range [0, " + std::to_string(n_) + ")");
  }
  const Op lop = to_op(op);
  auto arg = [&](std::span<const std::uint32_t> v, std::size_t i) -> std::uint32_t { return v.empty() ? 0u : v[i]; };
  if (ctx.mode() == Mode::kReplay) {
    for (std::size_t i = 0; i < n; ++i) {
      const Determinant& r = ctx.replay_next(packet_ids[i], id(), lop);
      if (r.slot != slots[i]) ctx.diverge(r, "the execution asks for slot " + std::to_string(slots[i]));
      std::uint32_t nv = 0;
      const bool mut = effect(op, val_of(r.value), arg(a, i), arg(b, i), nv);
      if (mut != ((r.flags & 1) != 0)) ctx.diverge(r, "the logged outcome does not follow from the logged value");
      ctx.observe(Observation{id(), lop, static_cast<std::uint8_t>(mut), r.slot, r.value, nv, 0});
      out[i] = val_of(r.value);
    }
    return;
  }
  const bool logged = ctx.mode() == Mode::kLogged;
  Determinant* rec = logged ? ctx.log().reserve(n) : nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    auto& w = word_[slots[i]];
    std::uint64_t old = w.load(std::memory_order_acquire);
    bool mut = false;
    for (;;) {
      std::uint32_t nv = 0;
      mut = effect(op, val_of(old), arg(a, i), arg(b, i), nv);
      if (!mut) break;
      if (w.compare_exchange_weak(old, pack(ver_of(old) + 1, nv), std::memory_order_acq_rel)) break;
    }
    out[i] = val_of(old);
    if (logged) {
      rec[i] = Determinant{packet_ids[i], id(), lop, static_cast<std::uint8_t>(mut), static_cast<std::uint32_t>(slots[i]), old};
    }
  }
  if (logged) ctx.log().commit(n);
}

std::uint32_t Registers::get(std::size_t slot) const {
  if (slot >= n_) throw std::invalid_argument("slot: out of range");
  return val_of(word_[slot].load(std::memory_order_acquire));
}

std::uint32_t Registers::version(std::size_t slot) const {
  if (slot >= n_) throw std::invalid_argument("slot: out of range");
  return ver_of(word_[slot].load(std::memory_order_acquire));
}

std::vector<std::uint8_t> Registers::snapshot() const {
  snapshot::Writer w("registers");
  w.reserve(8 + n_ * sizeof(std::uint64_t));
  std::uint8_t* v = w.put_array_space<std::uint64_t>(n_);
  for (std::size_t i = 0; i < n_; ++i) {
    const std::uint64_t x = word_[i].load();
    std::memcpy(v + i * sizeof x, &x, sizeof x);
  }
  return w.finish();
}

void Registers::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader r(image, "registers");
  auto v = r.get_array<std::uint64_t>(n_);
  r.expect_end();
  if (v.size() != n_) {
    throw snapshot::SnapshotError("registers '" + name() + "': snapshot has " + std::to_string(v.size()) + " slots, not " + std::to_string(n_));
  }
  for (std::size_t i = 0; i < n_; ++i) word_[i].store(v[i]);
}

void Registers::replay_begin() {
  replay_start_.resize(n_);
  for (std::size_t i = 0; i < n_; ++i) replay_start_[i] = word_[i].load();
}

void Registers::replay_finish(std::span<const Observation> obs) {
  // Mutations observed versions start..start+k-1, each seeing the value the previous one wrote;
  // every non-mutating access saw (version, value) of that chain. Then install the final word.
  std::vector<Observation> o(obs.begin(), obs.end());
  std::stable_sort(o.begin(), o.end(), [](const Observation& x, const Observation& y) { return x.slot < y.slot; });
  std::vector<std::pair<std::uint32_t, std::size_t>> muts;  // (relative version, obs index)
  std::vector<std::uint32_t> chain;                          // value at relative version v
  for (std::size_t i = 0; i < o.size();) {
    const std::uint32_t s = o[i].slot;
    const std::size_t begin = i;
    const std::uint64_t start = replay_start_[s];
    muts.clear();
    for (; i < o.size() && o[i].slot == s; ++i) {
      if (o[i].flags & 1) muts.emplace_back(ver_of(o[i].logged) - ver_of(start), i);
    }
    std::sort(muts.begin(), muts.end());
    chain.assign(1, val_of(start));
    for (std::size_t k = 0; k < muts.size(); ++k) {
      const Observation& m = o[muts[k].second];
      if (muts[k].first != k) fail("slot " + std::to_string(s) + ": logged versions are not one sequence");
      if (val_of(m.logged) != chain.back()) fail("slot " + std::to_string(s) + ": a logged access saw a value the register did not hold");
      chain.push_back(static_cast<std::uint32_t>(m.arg0));
    }
    for (std::size_t j = begin; j < i; ++j) {
      if (o[j].flags & 1) continue;
      const std::uint32_t rel = ver_of(o[j].logged) - ver_of(start);
      if (rel >= chain.size() || chain[rel] != val_of(o[j].logged)) {
        fail("slot " + std::to_string(s) + ": a logged read saw a version the register never had");
      }
    }
    word_[s].store(pack(ver_of(start) + static_cast<std::uint32_t>(muts.size()), chain.back()));
  }
  replay_start_.clear();
}

}  // namespace vnfkit::state
