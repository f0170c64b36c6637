// Replay: a fresh SharedState restored from a snapshot, plus the determinant logs of every worker
// thread. Replay contexts (one per original thread) force each access to take the logged outcome;
// the replaying execution may run the threads' inputs one after the other, on one thread, because
// every state type applies its effects in an order-independent way and checks at finish() that the
// observed outcomes form one consistent interleaving (version / generation / value chains).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "vnfkit/ftlog/log.hpp"
#include "vnfkit/state/shared_state.hpp"

namespace vnfkit::ftlog {

// One access to one shared variable as its thread logged it: the value it saw and the value it
// left (equal for reads and for additions of 0).
struct ChainStep {
  std::uint64_t before;
  std::uint64_t after;
};

// Result of check_chain: ok, or where every ordering got stuck.
struct ChainResult {
  bool ok = false;
  bool gave_up = false;       // the search bound was hit before an answer (counts as not ok)
  std::uint64_t stuck_at = 0;  // the value after the longest prefix found
  std::size_t placed = 0;      // accesses in that prefix
  std::size_t total = 0;
};

// Is there ONE order of all the steps, consistent with each thread's own order (threads[t] lists
// thread t's accesses to this variable in program order), in which the variable starts at `start`,
// every step sees the value the previous one left, and the last leaves `final`? That is the
// "one valid interleaving" a replay must establish per variable. Value-preserving steps are placed
// as soon as they can be (never wrong); when several threads' next steps saw the same value and
// change it (only possible when values recur, e.g. additions that also subtract) the search
// branches, remembering dead ends, and gives up after `max_states` branch points. Never-decreasing
// counters never branch (a linear pass); only counters that also decrease can need the search.
[[nodiscard]] ChainResult check_chain(std::uint64_t start, std::uint64_t final,
                                      std::span<const std::vector<ChainStep>> threads,
                                      std::size_t max_states = std::size_t{1} << 14);

// The weaker check used where check_chain gave up: the value-changing steps balance as a multiset
// ({start} + afters == befores + {final}) and every value-preserving step saw `start` or a value
// some changing step left. Program order is not checked.
[[nodiscard]] bool check_chain_multiset(std::uint64_t start, std::uint64_t final,
                                        std::span<const std::vector<ChainStep>> threads);

class Replayer {
 public:
  // chunks: all log chunks (any order); per thread they must be contiguous. start_positions
  // (optional, by thread): where each thread's log must start (the snapshot's cut).
  Replayer(std::shared_ptr<state::SharedState> state, std::vector<Chunk> chunks,
           std::map<std::uint16_t, std::uint64_t> start_positions = {});

  [[nodiscard]] std::vector<std::uint16_t> threads() const;
  // The replay context for original thread `thread` (threads with no records get an empty log).
  std::shared_ptr<state::Context> context(std::uint16_t thread);
  // Check that every record was consumed and the outcomes are consistent; installs the final state.
  void finish();
  [[nodiscard]] bool finished() const noexcept { return finished_; }

 private:
  std::shared_ptr<state::SharedState> state_;
  std::map<std::uint16_t, std::shared_ptr<state::Context>> contexts_;
  bool finished_ = false;
};

}  // namespace vnfkit::ftlog
