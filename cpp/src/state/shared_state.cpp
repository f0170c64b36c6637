#include "vnfkit/state/shared_state.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

SharedState::SharedState() : arena_(Arena::heap()) {}

SharedState::SharedState(std::shared_ptr<Arena> arena) : arena_(std::move(arena)) {
  if (!arena_) throw std::invalid_argument("arena: required");
}

std::shared_ptr<SharedState> SharedState::create_shm(const std::string& name, std::size_t bytes, const ShmLimits& limits) {
  return std::make_shared<SharedState>(Arena::create_shm(name, bytes, limits));
}

std::shared_ptr<SharedState> SharedState::attach_shm(const std::string& name) {
  return std::make_shared<SharedState>(Arena::attach_shm(name));
}

void SharedState::sync_locked() const {
  // Views of objects another process (or this one, earlier) published in the arena.
  const std::size_t n = arena_->count();
  for (std::size_t id = objects_.size(); id < n; ++id) {
    const Arena::Entry e = arena_->entry(id);
    const auto i = static_cast<std::uint16_t>(id);
    std::shared_ptr<SharedObject> o;
    switch (e.kind) {
      case Kind::kCounters: o = std::make_shared<Counters>(e.name, i, e.mem, arena_); break;
      case Kind::kTokenBuckets: o = std::make_shared<TokenBuckets>(e.name, i, e.mem, arena_); break;
      case Kind::kPortPool: o = std::make_shared<PortPool>(e.name, i, e.mem, arena_); break;
      case Kind::kRegisters: o = std::make_shared<Registers>(e.name, i, e.mem, arena_); break;
      case Kind::kBuffer: o = std::make_shared<SharedBuffer>(e.name, i, e.mem, arena_); break;
      default: throw std::runtime_error("shared state: object " + std::to_string(id) + " has an unknown kind");
    }
    objects_.push_back(std::move(o));
  }
}

template <typename T>
std::shared_ptr<T> SharedState::declare(const std::string& name, Kind kind, const typename T::Params& given) {
  if (name.empty() || name.size() > Arena::kNameMax) throw std::invalid_argument("name: must be 1-200 characters");
  const typename T::Params p = given.validated();
  std::lock_guard lock(mu_);
  if (closed_) throw std::invalid_argument("shared state: closed");
  Arena::Guard guard(*arena_);
  sync_locked();
  for (const auto& o : objects_) {
    if (o->name() != name) continue;
    if (std::string(o->kind()) != kind_name(kind)) {
      throw std::invalid_argument("name: a shared variable named '" + name + "' already exists as " + o->kind() +
                                  ", not " + kind_name(kind));
    }
    auto t = std::static_pointer_cast<T>(o);
    const auto have = t->params();
    if (!(have == p)) {
      throw std::invalid_argument("name: a shared variable named '" + name + "' already exists as " + have.describe() +
                                  ", not " + p.describe());
    }
    return t;
  }
  const auto id = static_cast<std::uint16_t>(objects_.size());
  void* mem = arena_->allocate(name, kind, T::storage_bytes(p));
  T::format(mem, p);
  arena_->publish();
  auto t = std::make_shared<T>(name, id, mem, arena_);
  objects_.push_back(t);
  return t;
}

std::shared_ptr<Counters> SharedState::counters(const std::string& name, std::size_t slots, bool keyed) {
  return declare<Counters>(name, Kind::kCounters, {slots, keyed});
}

std::shared_ptr<TokenBuckets> SharedState::token_buckets(const std::string& name, std::size_t buckets, double rate_per_s,
                                                         double burst) {
  return declare<TokenBuckets>(name, Kind::kTokenBuckets, {buckets, rate_per_s, burst});
}

std::shared_ptr<PortPool> SharedState::port_pool(const std::string& name, std::uint16_t lo, std::uint16_t hi,
                                                 std::span<const std::uint16_t> subpool_of) {
  return declare<PortPool>(name, Kind::kPortPool, {lo, hi, std::vector<std::uint16_t>(subpool_of.begin(), subpool_of.end())});
}

std::shared_ptr<Registers> SharedState::registers(const std::string& name, std::size_t slots, std::uint32_t initial) {
  return declare<Registers>(name, Kind::kRegisters, {slots, initial});
}

std::shared_ptr<SharedBuffer> SharedState::buffer(const std::string& name, std::size_t nbytes) {
  return declare<SharedBuffer>(name, Kind::kBuffer, {nbytes});
}

std::size_t SharedState::size() const {
  std::lock_guard lock(mu_);
  sync_locked();
  return objects_.size();
}

std::shared_ptr<SharedObject> SharedState::object(std::size_t id) const {
  std::lock_guard lock(mu_);
  sync_locked();
  if (id >= objects_.size()) throw std::invalid_argument("object: no shared variable with id " + std::to_string(id));
  return objects_[id];
}

std::string SharedState::variable_name(std::uint16_t object, std::uint32_t slot) const {
  std::shared_ptr<SharedObject> o;
  {
    std::lock_guard lock(mu_);
    sync_locked();
    if (object < objects_.size()) o = objects_[object];
  }
  if (!o) return "unknown variable " + std::to_string(object) + "[" + std::to_string(slot) + "]";
  return o->slot_name(slot);
}

namespace {
Context::NameFn names_of(const std::weak_ptr<const SharedState>& w) {
  return [w](std::uint16_t object, std::uint32_t slot) -> std::string {
    if (auto s = w.lock()) return s->variable_name(object, slot);
    return "object " + std::to_string(object) + "[" + std::to_string(slot) + "]";
  };
}
}  // namespace

std::shared_ptr<Context> SharedState::context(std::uint16_t thread, Mode mode, std::uint64_t seed) {
  const std::size_t max_threads = arena_->is_shm() ? arena_->max_workers() : kMaxThreads;
  if (thread >= max_threads) throw std::invalid_argument("thread: must be < " + std::to_string(max_threads));
  if (mode == Mode::kReplay) throw std::invalid_argument("mode: replay contexts come from a Replayer");
  std::lock_guard lock(mu_);
  if (contexts_.size() <= thread) contexts_.resize(thread + 1u);
  auto& c = contexts_[thread];
  const auto me = static_cast<std::int32_t>(::getpid());
  if (c) {
    if (c->mode() != mode) {
      throw std::invalid_argument("mode: the context of thread " + std::to_string(thread) + " already exists in another mode");
    }
    if (c->log().fixed() && c->log().shared().owner_pid.load(std::memory_order_relaxed) != me) {
      throw std::invalid_argument("thread: the context of worker " + std::to_string(thread) +
                                  " belongs to another process (inherited through fork?); make it in the worker");
    }
    return c;
  }
  if (closed_) throw std::invalid_argument("shared state: closed");
  ftlog::LogShared* slot = nullptr;
  if (arena_->is_shm() && mode == Mode::kLogged) {
    slot = arena_->log_slot(thread, true);
    std::int32_t cur = 0;
    while (!slot->owner_pid.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) {
      if (cur == me || (cur > 0 && (::kill(cur, 0) == 0 || errno == EPERM))) {
        throw std::invalid_argument("thread: the log of worker " + std::to_string(thread) + " in '" + arena_->shm_name() +
                                    "' is in use by process " + std::to_string(cur));
      }
      // its owner died: take the slot over (the log continues from its positions)
    }
  }
  c = std::make_shared<Context>(thread, mode, seed, names_of(weak_from_this()), slot,
                                slot ? std::shared_ptr<void>(arena_) : std::shared_ptr<void>());
  return c;
}

std::shared_ptr<Context> SharedState::make_replay_context(std::uint16_t thread) {
  return std::make_shared<Context>(thread, Mode::kReplay, 0, names_of(weak_from_this()));
}

std::vector<std::uint64_t> SharedState::positions() const {
  std::atomic_thread_fence(std::memory_order_acquire);  // pairs with DeterminantLog::reserve()
  std::lock_guard lock(mu_);
  std::vector<std::uint64_t> p(contexts_.size(), 0);
  for (std::size_t t = 0; t < contexts_.size(); ++t) {
    if (contexts_[t]) p[t] = contexts_[t]->log().reserved_end();
  }
  if (arena_->is_shm()) {
    for (std::size_t t = 0; t < arena_->max_workers(); ++t) {
      const ftlog::LogShared* ls = arena_->log_slot(static_cast<std::uint16_t>(t), false);
      if (!ls) continue;
      if (p.size() <= t) p.resize(t + 1, 0);
      p[t] = ls->reserved.load(std::memory_order_acquire);
    }
  }
  return p;
}

const ftlog::LogShared* SharedState::log_of(std::uint16_t thread, const ftlog::Determinant** records) const {
  if (arena_->is_shm()) {
    if (thread >= arena_->max_workers()) {
      throw std::invalid_argument("thread: must be < " + std::to_string(arena_->max_workers()));
    }
    const ftlog::LogShared* ls = arena_->log_slot(thread, false);
    if (ls) {
      *records = ls->records();
      return ls;
    }
  }
  std::lock_guard lock(mu_);
  if (thread < contexts_.size() && contexts_[thread] && contexts_[thread]->mode() == Mode::kLogged) {
    *records = contexts_[thread]->log().records().data();
    return &contexts_[thread]->log().shared();
  }
  throw std::invalid_argument("thread: worker " + std::to_string(thread) + " has no determinant log here");
}

std::vector<std::uint8_t> SharedState::chunk_range(std::uint16_t thread, std::uint64_t from, std::uint64_t to) const {
  if (to < from) {
    throw std::invalid_argument("to_position: " + std::to_string(to) + " is before from_position " + std::to_string(from));
  }
  std::vector<ftlog::Determinant> recs;
  const std::uint64_t first = read_log(thread, from, recs);
  if (first != from) {
    throw std::invalid_argument("from_position: worker " + std::to_string(thread) + "'s log starts at " +
                                std::to_string(first) + ", records needed from " + std::to_string(from));
  }
  if (recs.size() < to - from) {
    throw std::invalid_argument("to_position: worker " + std::to_string(thread) + "'s log ends at " +
                                std::to_string(first + recs.size()) + ", records needed up to " + std::to_string(to));
  }
  recs.resize(static_cast<std::size_t>(to - from));
  return ftlog::encode_chunk(thread, first, recs);
}

std::uint64_t SharedState::read_log(std::uint16_t thread, std::uint64_t from, std::vector<ftlog::Determinant>& out) const {
  const ftlog::Determinant* recs = nullptr;
  const ftlog::LogShared* ls = log_of(thread, &recs);
  return ftlog::read_shared_log(*ls, recs, from, out);
}

std::pair<std::uint64_t, std::uint64_t> SharedState::log_range(std::uint16_t thread) const {
  const ftlog::Determinant* recs = nullptr;
  const ftlog::LogShared* ls = log_of(thread, &recs);
  for (;;) {
    const std::uint64_t b = ls->base.load(std::memory_order_acquire);
    const std::uint64_t n = ls->size.load(std::memory_order_acquire);
    if (ls->base.load(std::memory_order_acquire) == b) return {b, b + n};
  }
}

void SharedState::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  arena_->unlink();
}

std::vector<std::uint8_t> SharedState::snapshot() const {
  std::lock_guard lock(mu_);
  sync_locked();
  snapshot::Writer w("shared_state");
  w.reserve(snapshot_hint_);  // the previous image's size: one buffer, no regrowth
  w.put<std::uint64_t>(objects_.size());
  for (const auto& o : objects_) {
    const std::string& nm = o->name();
    const std::string kd = o->kind();
    w.put_array<char>({nm.data(), nm.size()});
    w.put_array<char>({kd.data(), kd.size()});
    const auto img = o->snapshot();
    w.put_array<std::uint8_t>(img);
  }
  auto out = w.finish();
  snapshot_hint_ = out.size();
  return out;
}

void SharedState::restore(std::span<const std::uint8_t> image) {
  std::lock_guard lock(mu_);
  sync_locked();
  snapshot::Reader r(image, "shared_state");
  const auto n = r.get<std::uint64_t>();
  if (n != objects_.size()) {
    throw snapshot::SnapshotError("shared_state: snapshot has " + std::to_string(n) + " variables, this state declares " +
                                  std::to_string(objects_.size()));
  }
  std::vector<std::vector<std::uint8_t>> images;
  for (const auto& o : objects_) {
    const auto nm = r.get_array<char>(256);
    const auto kd = r.get_array<char>(64);
    if (std::string(nm.begin(), nm.end()) != o->name() || std::string(kd.begin(), kd.end()) != o->kind()) {
      throw snapshot::SnapshotError("shared_state: snapshot variable '" + std::string(nm.begin(), nm.end()) + "' (" +
                                    std::string(kd.begin(), kd.end()) + ") does not match declared '" + o->name() +
                                    "' (" + o->kind() + ")");
    }
    images.push_back(r.get_array<std::uint8_t>());
  }
  r.expect_end();
  for (std::size_t i = 0; i < objects_.size(); ++i) objects_[i]->restore(images[i]);
}

}  // namespace vnfkit::state
