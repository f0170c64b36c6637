// Output commit: a packet may leave only once every determinant it depends on is in stable
// storage. Each emitted batch is tagged with a vector clock (per-thread log positions, e.g.
// SharedState::positions() at emit time); stable storage acknowledges log positions; release()
// hands out, in order per queue, the packets whose whole clock is acknowledged.
//
// Acks: ack(thread, position) is cumulative ("records [0, position) of `thread` are stable"); a
// smaller, late ack is ignored. ack_range(thread, first, count) acknowledges one chunk and may
// arrive out of order: the stable prefix only advances over contiguous ranges.
// Thread safety: tag/release on a queue take that queue's mutex (once per batch); acks take the
// thread's mutex. None of this is on the shared-state access path.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace vnfkit::ftlog {

class OutputCommit {
 public:
  OutputCommit(std::size_t threads, std::size_t queues);

  [[nodiscard]] std::size_t threads() const noexcept { return acked_.size(); }
  [[nodiscard]] std::size_t queues() const noexcept { return queues_.size(); }

  // Append packets to `queue`, all depending on the vector clock `positions` (one per thread).
  void tag(std::size_t queue, std::span<const std::uint64_t> packet_ids, std::span<const std::uint64_t> positions);
  void ack(std::size_t thread, std::uint64_t position);
  void ack_range(std::size_t thread, std::uint64_t first, std::uint64_t count);
  // Stable prefix of `thread`.
  [[nodiscard]] std::uint64_t acked(std::size_t thread) const;
  // Pop the releasable prefix of `queue` into out (appended); returns how many.
  std::size_t release(std::size_t queue, std::vector<std::uint64_t>& out);
  [[nodiscard]] std::size_t pending(std::size_t queue) const;

 private:
  struct Group {
    std::vector<std::uint64_t> clock;
    std::size_t remaining;
  };
  struct Queue {
    mutable std::mutex mu;
    std::deque<std::uint64_t> packets;
    std::deque<Group> groups;
  };
  struct Acked {
    mutable std::mutex mu;
    std::atomic<std::uint64_t> prefix{0};
    std::map<std::uint64_t, std::uint64_t> pending;  // first -> end of out-of-order ranges
  };
  std::vector<std::unique_ptr<Acked>> acked_;
  std::vector<std::unique_ptr<Queue>> queues_;
};

}  // namespace vnfkit::ftlog
