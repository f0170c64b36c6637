// The streaming master's checkpoint + replay bookkeeping, per input batch and per output slab.
//
// Input batches are numbered 0, 1, ... and dispatched in order; each queue that gets packets of
// input s gets exactly one slab of it, and its slabs come back in order. A slab comes back with a
// clock: every worker's determinant-log position when that slab was done (all it can depend on).
// Once every slab of input s is back, its determinant record can be cut: worker q's records from
// its position after record s-1 (`bound`) to its position at the end of its last slab of input
// <= s. Records are cut in order, so once storage acknowledges record s, every worker's log below
// the bound after s is stable (a prefix).
//
// Output commit: a slab of input s leaves, in order per queue, once storage acknowledged input s's
// record and its determinant record (the backup re-executes every input without a stable record,
// outputs on, so none of its outputs may have left) and every worker's stable prefix covers the
// slab's clock. One vector comparison per slab: nothing is tracked per packet (OutputCommit does
// that for outputs tagged in any order).
//
// Not thread-safe: one master thread owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

namespace vnfkit::ftlog {

class StreamCommit {
 public:
  explicit StreamCommit(std::size_t workers);

  [[nodiscard]] std::size_t workers() const noexcept { return bound_.size(); }

  // Input `seq` (packet ids [first_id, first_id + packets)) was dispatched; counts[q] packets of
  // it went to queue q (a slab there iff counts[q] > 0). Inputs must come in order from the
  // first one given: std::invalid_argument otherwise, or if counts has the wrong size.
  void dispatched(std::uint64_t seq, std::uint64_t first_id, std::uint64_t packets,
                  std::span<const std::uint32_t> counts, std::uint64_t now_ns);

  // The next slab of queue q came back, done at log positions `clock` (one per worker), holding
  // `packets` packets with ids first..last (ignored if packets == 0). Returns its input. Throws
  // std::logic_error if q has no slab in flight, the clock has the wrong size, or the ids are not
  // all of that input (a slab must not span input batches).
  std::uint64_t returned(std::size_t q, std::span<const std::uint64_t> clock, std::uint64_t packets,
                         std::uint64_t first, std::uint64_t last, std::uint64_t now_ns);

  // Cut the next determinant record if every slab of it is back: its input, and every worker's
  // [from[q], to[q]) (to == from: no records of q). False if none can be cut yet.
  bool cut_record(std::uint64_t& seq, std::vector<std::uint64_t>& from, std::vector<std::uint64_t>& to);
  // What cut_record would give now, without cutting it.
  bool peek_record(std::uint64_t& seq, std::vector<std::uint64_t>& from, std::vector<std::uint64_t>& to) const;

  // Storage acknowledged the determinant records below `det_acked` and the input records below
  // `input_acked` (cumulative; smaller, late values are ignored).
  void acknowledged(std::uint64_t det_acked, std::uint64_t input_acked);

  // Pop the slabs at the head of queue q that may leave now; appends their inputs to `seqs` and
  // returns how many.
  std::size_t release(std::size_t q, std::vector<std::uint64_t>& seqs);

  // Every worker's log position after the last record cut.
  [[nodiscard]] const std::vector<std::uint64_t>& bound() const noexcept { return bound_; }
  // Every worker's stable log prefix (acknowledged records).
  [[nodiscard]] const std::vector<std::uint64_t>& stable() const noexcept { return stable_; }
  [[nodiscard]] std::uint64_t next_record() const noexcept { return next_record_; }
  [[nodiscard]] std::uint64_t input_acked() const noexcept { return input_acked_; }
  // Slabs of queue q in flight (dispatched, not back).
  [[nodiscard]] std::size_t in_flight(std::size_t q) const { return queue(q).expected.size(); }
  // When queue q last got work while it had none in flight, or last returned a slab.
  [[nodiscard]] std::uint64_t busy_since_ns(std::size_t q) const { return queue(q).busy_since_ns; }
  // Slabs and packets back and waiting to leave.
  [[nodiscard]] std::size_t held_slabs() const noexcept;
  [[nodiscard]] std::uint64_t held_packets() const noexcept;
  // The oldest input with a slab in flight or held (none: nothing is).
  [[nodiscard]] std::optional<std::uint64_t> oldest_pending() const noexcept;

 private:
  struct Held {
    std::uint64_t seq;
    std::uint64_t packets;
  };
  struct Queue {
    std::deque<std::uint64_t> expected;                            // inputs of the slabs in flight
    std::deque<std::pair<std::uint64_t, std::uint64_t>> slab_end;  // (input, own log position) not cut yet
    std::deque<Held> held;
    std::deque<std::uint64_t> clocks;  // the held slabs' clocks, workers() words each, in `held`'s order
    std::uint64_t busy_since_ns = 0;
  };
  struct Input {
    std::uint64_t seq, first_id, packets;
  };
  const Queue& queue(std::size_t q) const;
  Queue& queue(std::size_t q);

  std::vector<Queue> queues_;
  std::deque<Input> inputs_;  // inputs whose record is not cut yet (ids, for the slab check)
  std::vector<std::uint64_t> bound_, stable_;
  std::deque<std::pair<std::uint64_t, std::vector<std::uint64_t>>> cut_;  // (input, bound after its record) not acked
  std::optional<std::uint64_t> next_input_;
  std::uint64_t next_record_ = 0;
  std::uint64_t input_acked_ = 0;
  std::uint64_t det_acked_ = 0;
};

}  // namespace vnfkit::ftlog
