// The registry of one VNF's shared aggregate state: named objects (their ids are the variable ids
// in determinants), the per-thread recording contexts, and whole-state snapshots.
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"
#include "vnfkit/state/counters.hpp"
#include "vnfkit/state/port_pool.hpp"
#include "vnfkit/state/register.hpp"
#include "vnfkit/state/token_bucket.hpp"

namespace vnfkit::state {

class SharedState : public std::enable_shared_from_this<SharedState> {
 public:
  static constexpr std::size_t kMaxObjects = 0xFFFE;
  static constexpr std::size_t kMaxThreads = 1024;

  std::shared_ptr<Counters> counters(const std::string& name, std::size_t slots, bool keyed);
  std::shared_ptr<TokenBuckets> token_buckets(const std::string& name, std::size_t buckets, double rate_per_s,
                                              double burst);
  std::shared_ptr<PortPool> port_pool(const std::string& name, std::uint16_t lo, std::uint16_t hi,
                                      std::span<const std::uint16_t> subpool_of = {});
  std::shared_ptr<Registers> registers(const std::string& name, std::size_t slots, std::uint32_t initial);

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::shared_ptr<SharedObject> object(std::size_t id) const;
  [[nodiscard]] std::string variable_name(std::uint16_t object, std::uint32_t slot) const;

  // The recording context of worker `thread` (created on first use with that mode).
  std::shared_ptr<Context> context(std::uint16_t thread, Mode mode, std::uint64_t seed);
  // A fresh replay context for `thread` (not registered; used by Replayer).
  std::shared_ptr<Context> make_replay_context(std::uint16_t thread);
  // Vector clock for output commit: reserved_end() of each registered context, by thread index.
  [[nodiscard]] std::vector<std::uint64_t> positions() const;

  // Every object's image, in id order, with names and kinds checked on restore.
  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  void restore(std::span<const std::uint8_t> image);

 private:
  void check_new(const std::string& name) const;
  mutable std::mutex mu_;  // registry changes only (declarations, context creation): never per access
  std::vector<std::shared_ptr<SharedObject>> objects_;
  std::vector<std::shared_ptr<Context>> contexts_;
};

}  // namespace vnfkit::state
