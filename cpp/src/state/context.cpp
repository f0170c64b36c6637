#include "vnfkit/state/context.hpp"

#include <unistd.h>

#include <ctime>
#include <string>

namespace vnfkit::state {

using ftlog::Determinant;
using ftlog::Op;

namespace {
std::uint64_t splitmix(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
std::uint64_t wall_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

Context::Context(std::uint16_t thread, Mode mode, std::uint64_t seed, NameFn names, ftlog::LogShared* shared_log,
                 std::shared_ptr<void> keep)
    : keep_(std::move(keep)),
      thread_(thread),
      mode_(mode),
      log_(shared_log ? ftlog::DeterminantLog(shared_log) : ftlog::DeterminantLog(mode == Mode::kLogged ? (1u << 16) : 64)),
      names_(std::move(names)) {
  std::uint64_t s = seed ^ (static_cast<std::uint64_t>(thread) << 48);
  for (auto& r : rng_) r = splitmix(s);
}

Context::~Context() {
  if (!log_.fixed()) return;
  std::int32_t me = static_cast<std::int32_t>(::getpid());
  log_.shared().owner_pid.compare_exchange_strong(me, 0, std::memory_order_release);
}

std::uint64_t Context::next_random() noexcept {  // xoshiro256**
  const std::uint64_t result = rotl(rng_[1] * 5, 7) * 9;
  const std::uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = rotl(rng_[3], 45);
  return result;
}

std::string Context::variable_name(std::uint16_t object, std::uint32_t slot) const {
  if (object == ftlog::kContextObject) return "context " + std::to_string(thread_);
  return names_ ? names_(object, slot) : "object " + std::to_string(object) + "[" + std::to_string(slot) + "]";
}

namespace {
template <typename Gen>
void ctx_values(Context& ctx, Op op, std::span<const std::uint64_t> pids, std::span<std::uint64_t> out, Gen gen) {
  if (out.size() != pids.size()) throw std::invalid_argument("out: length must equal packet_ids");
  const std::size_t n = pids.size();
  switch (ctx.mode()) {
    case Mode::kUnlogged:
      for (std::size_t i = 0; i < n; ++i) out[i] = gen();
      break;
    case Mode::kLogged: {
      Determinant* rec = ctx.log().reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t v = gen();
        out[i] = v;
        rec[i] = Determinant{pids[i], ftlog::kContextObject, op, 0, 0, v};
      }
      ctx.log().commit(n);
      break;
    }
    case Mode::kReplay:
      for (std::size_t i = 0; i < n; ++i) out[i] = ctx.replay_next(pids[i], ftlog::kContextObject, op).value;
      break;
  }
}
}  // namespace

void Context::now_ns(std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out) {
  ctx_values(*this, Op::kClock, packet_ids, out, [] { return wall_ns(); });
}

void Context::random_u64(std::span<const std::uint64_t> packet_ids, std::span<std::uint64_t> out) {
  ctx_values(*this, Op::kRandom, packet_ids, out, [this] { return next_random(); });
}

void Context::set_replay_log(std::vector<Determinant> records, std::uint64_t first_position) {
  replay_ = std::move(records);
  replay_pos_ = 0;
  replay_first_ = first_position;
  observations_.clear();
}

const Determinant& Context::replay_next(std::uint64_t packet_id, std::uint16_t object, Op op) {
  if (replay_pos_ >= replay_.size()) {
    throw ftlog::DivergenceError("replay divergence on thread " + std::to_string(thread_) + ": packet " +
                                 std::to_string(packet_id) + " asks for " + ftlog::op_name(op) + " on " +
                                 variable_name(object, 0).substr(0, variable_name(object, 0).find('[')) +
                                 " but the log has no more records (log truncated at position " +
                                 std::to_string(replay_first_ + replay_.size()) + ")");
  }
  const Determinant& r = replay_[replay_pos_];
  if (r.packet_id != packet_id || r.object != object || r.op != op) {
    const std::string asked = variable_name(object, 0);
    throw ftlog::DivergenceError(
        "replay divergence on thread " + std::to_string(thread_) + " at log position " +
        std::to_string(replay_first_ + replay_pos_) + ": packet " + std::to_string(packet_id) + " asks for " +
        ftlog::op_name(op) + " on " + asked.substr(0, asked.find('[')) + ", but the log has packet " +
        std::to_string(r.packet_id) + " " + ftlog::op_name(r.op) + " on " + variable_name(r.object, r.slot));
  }
  ++replay_pos_;
  return r;
}

void Context::diverge(const Determinant& rec, const std::string& why) const {
  throw ftlog::DivergenceError("replay divergence on thread " + std::to_string(thread_) + ": packet " +
                               std::to_string(rec.packet_id) + ", variable " + variable_name(rec.object, rec.slot) +
                               " (" + ftlog::op_name(rec.op) + "): " + why);
}

std::string SharedObject::slot_name(std::uint32_t slot) const {
  return "'" + name_ + "'[" + std::to_string(slot) + "]";
}

void SharedObject::fail(const std::string& why) const {
  throw ftlog::DivergenceError("replay divergence in '" + name_ + "' (" + kind() + "): " + why);
}

}  // namespace vnfkit::state
