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
