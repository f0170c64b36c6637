#include "vnfkit/state/shared_state.hpp"

#include <atomic>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

void SharedState::check_new(const std::string& name) const {
  if (name.empty() || name.size() > 200) throw std::invalid_argument("name: must be 1-200 characters");
  if (objects_.size() >= kMaxObjects) throw std::invalid_argument("name: too many shared objects");
  for (const auto& o : objects_) {
    if (o->name() == name) throw std::invalid_argument("name: a shared variable named '" + name + "' already exists");
  }
}

std::shared_ptr<Counters> SharedState::counters(const std::string& name, std::size_t slots, bool keyed) {
  std::lock_guard lock(mu_);
  check_new(name);
  auto o = std::make_shared<Counters>(name, static_cast<std::uint16_t>(objects_.size()), slots, keyed);
  objects_.push_back(o);
  return o;
}

std::shared_ptr<TokenBuckets> SharedState::token_buckets(const std::string& name, std::size_t buckets, double rate_per_s,
                                                         double burst) {
  std::lock_guard lock(mu_);
  check_new(name);
  auto o = std::make_shared<TokenBuckets>(name, static_cast<std::uint16_t>(objects_.size()), buckets, rate_per_s, burst);
  objects_.push_back(o);
  return o;
}

std::shared_ptr<PortPool> SharedState::port_pool(const std::string& name, std::uint16_t lo, std::uint16_t hi,
                                                 std::span<const std::uint16_t> subpool_of) {
  std::lock_guard lock(mu_);
  check_new(name);
  auto o = std::make_shared<PortPool>(name, static_cast<std::uint16_t>(objects_.size()), lo, hi, subpool_of);
  objects_.push_back(o);
  return o;
}

std::shared_ptr<Registers> SharedState::registers(const std::string& name, std::size_t slots, std::uint32_t initial) {
  std::lock_guard lock(mu_);
  check_new(name);
  auto o = std::make_shared<Registers>(name, static_cast<std::uint16_t>(objects_.size()), slots, initial);
  objects_.push_back(o);
  return o;
}

std::size_t SharedState::size() const {
  std::lock_guard lock(mu_);
  return objects_.size();
}

std::shared_ptr<SharedObject> SharedState::object(std::size_t id) const {
  std::lock_guard lock(mu_);
  if (id >= objects_.size()) throw std::invalid_argument("object: no shared variable with id " + std::to_string(id));
  return objects_[id];
}

std::string SharedState::variable_name(std::uint16_t object, std::uint32_t slot) const {
  std::shared_ptr<SharedObject> o;
  {
    std::lock_guard lock(mu_);
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
  if (thread >= kMaxThreads) throw std::invalid_argument("thread: must be < " + std::to_string(kMaxThreads));
  if (mode == Mode::kReplay) throw std::invalid_argument("mode: replay contexts come from a Replayer");
  std::lock_guard lock(mu_);
  if (contexts_.size() <= thread) contexts_.resize(thread + 1u);
  auto& c = contexts_[thread];
  if (!c) {
    c = std::make_shared<Context>(thread, mode, seed, names_of(weak_from_this()));
  } else if (c->mode() != mode) {
    throw std::invalid_argument("mode: the context of thread " + std::to_string(thread) + " already exists in another mode");
  }
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
  return p;
}

std::vector<std::uint8_t> SharedState::snapshot() const {
  std::lock_guard lock(mu_);
  snapshot::Writer w("shared_state");
  w.put<std::uint64_t>(objects_.size());
  for (const auto& o : objects_) {
    const std::string& nm = o->name();
    const std::string kd = o->kind();
    w.put_array<char>({nm.data(), nm.size()});
    w.put_array<char>({kd.data(), kd.size()});
    const auto img = o->snapshot();
    w.put_array<std::uint8_t>(img);
  }
  return w.finish();
}

void SharedState::restore(std::span<const std::uint8_t> image) {
  std::lock_guard lock(mu_);
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
