// Dispatcher: the process backend's "NIC", one call per input batch.
//
// It owns no memory of the rings: it drives `lanes` (one SlabRing + SlabLayout per queue, in
// shared memory, created by the runtime). For every input batch it gives each packet a
// runner-wide, monotonic packet id (optional), parses it (optional), classifies it by RSS, and
// appends each queue's packets, in arrival order, into that queue's open slab; a slab is committed
// to its worker when it holds `batch_size` packets (or its bytes are full) and, at the end of each
// call, when its oldest packet has waited `flush_ns` (and, with `hold_while_busy`, its worker has
// finished every slab it was given). It releases processed slabs in order per
// queue and accounts for them natively: packets, forwarded (port != 0), drops by DropReason code
// (port 0), slabs, and every packet's latency from its arrival to its release into a
// LatencyHistogram. With `collect` set, each released slab is also copied into an owned
// PacketBatch kept in an outbox for the caller (who hands it on and empties the outbox).
//
// When a queue has no free slab, the dispatcher releases outputs and waits for its worker (spin,
// then futex) -- but never past the caller's deadline: calls return false ("not finished; call
// resume() / pace() / drain() again") so that the caller can look at its workers between calls.
// Batch-wide validation (link type, packet sizes) happens before any packet moves; the packet loops
// neither allocate (except the outbox copies) nor throw.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "vnfkit/classify/classifier.hpp"
#include "vnfkit/packet/batch.hpp"
#include "vnfkit/runtime/latency.hpp"
#include "vnfkit/runtime/ring.hpp"
#include "vnfkit/runtime/slab.hpp"

namespace vnfkit::runtime {

// CLOCK_MONOTONIC in ns: the runtime's arrival / release clock.
inline std::uint64_t steady_now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

struct DispatcherConfig {
  std::uint32_t batch_size = 256;  // B: packets per slab before it is committed (<= every lane's max_packets)
  std::uint64_t flush_ns = 50'000; // T: a non-empty open slab is committed once its oldest packet waited this long
  bool parse = true;               // parse every input batch before classifying it
  bool assign_ids = true;          // overwrite packet_id with runner-wide ids
  // How long a wait for a worker's output polls before it sleeps on the futex. Polling pays off
  // only while every busy process has a core of its own; with more processes than cores a poll
  // steals the core the worker needs, so the runtime then sets this to 0 (sleep at once).
  std::uint64_t spin_ns = SlabRing::kDefaultSpinNs;
  // A due partial slab waits while its worker still has a slab it has not finished: committing it
  // would not make its packets start any sooner, and holding it lets the batch grow under load
  // (fewer per-batch costs exactly when the worker is the bottleneck). It goes as soon as the
  // worker has caught up, or when it holds batch_size packets.
  bool hold_while_busy = true;
};

struct Lane {
  SlabRing* ring;
  const SlabLayout* layout;
};

// What the dispatcher counted for one queue since the last clear.
struct QueueCounters {
  std::uint64_t packets = 0, forwarded = 0, slabs = 0;
  std::array<std::uint64_t, 256> drops{};  // port-0 packets by DropReason code (0 = unspecified)
  LatencyHistogram latency;
};

class Dispatcher {
 public:
  // Throws std::invalid_argument naming the field (no lanes, classifier queues != lanes,
  // batch_size 0 or above a lane's max_packets).
  Dispatcher(std::vector<Lane> lanes, const classify::MultiQueueClassifier& classifier, DispatcherConfig cfg);

  [[nodiscard]] std::size_t num_queues() const noexcept { return lanes_.size(); }
  [[nodiscard]] const DispatcherConfig& config() const noexcept { return cfg_; }
  [[nodiscard]] std::uint64_t next_id() const noexcept { return next_id_; }
  void set_next_id(std::uint64_t v) noexcept { next_id_ = v; }
  void set_collect(bool on) noexcept { collect_ = on; }
  [[nodiscard]] bool busy() const noexcept { return cur_ != nullptr; }
  // Packets of queue q in the batch dispatch() / begin_paced() took last (0 before any batch).
  [[nodiscard]] std::uint32_t queue_count(std::size_t q) const noexcept { return qoff_[q + 1] - qoff_[q]; }

  // ---- closed loop
  // Take `b` (every packet arrived at arrival_ns): ids, parse, classify, then as resume().
  // Throws std::invalid_argument (touching nothing) if the link type is not parseable (with
  // parse), a packet is larger than a slab's data capacity, or a batch is still in progress.
  bool dispatch(packet::PacketBatch& b, std::uint64_t arrival_ns, std::uint64_t deadline_ns);
  // Append what is left of the current batch (if any); then release ready outputs and flush due
  // slabs. True when the whole batch is in slabs (the dispatcher then forgets it).
  bool resume(std::uint64_t deadline_ns);

  // ---- open loop: packet i of `trace` arrives at t0 + i * period_ns, where t0 is start_in_ns after
  // the trace is prepared (ids, parse, classify: a NIC does that before the clock starts).
  void begin_paced(packet::PacketBatch& trace, std::uint64_t start_in_ns, double period_ns, std::size_t chunk);
  // Push due packets, flush on T, release outputs until the trace is in slabs (true) or deadline.
  bool pace(std::uint64_t deadline_ns);

  // ---- both
  // Commit every open slab, wait for and release every output; true when nothing is in flight.
  bool drain(std::uint64_t deadline_ns);
  // Release every ready output of every lane; returns how many slabs.
  std::size_t release_ready();
  // Commit open slabs whose oldest packet arrived at or before now - flush_ns (unless held while
  // their worker is busy, see DispatcherConfig), or all of them if force.
  void flush_due(std::uint64_t now, bool force);

  [[nodiscard]] const QueueCounters& counters(std::size_t q) const noexcept { return stats_[q]; }
  void clear_counters() noexcept;
  // Released slabs copied for the caller (collect mode), by queue, in release order per queue.
  std::vector<std::pair<std::uint16_t, packet::PacketBatch>>& outbox() noexcept { return outbox_; }

 private:
  void prepare(packet::PacketBatch& b);
  // Append packets with trace index < limit; false if the deadline passed with some left.
  bool push(std::uint64_t limit, std::uint64_t deadline_ns);
  void commit(std::size_t q);
  void release_one(std::size_t q, std::uint64_t now);

  std::vector<Lane> lanes_;
  const classify::MultiQueueClassifier& classifier_;
  DispatcherConfig cfg_;
  std::vector<QueueCounters> stats_;
  std::vector<std::pair<std::uint16_t, packet::PacketBatch>> outbox_;
  bool collect_ = false;
  std::uint64_t next_id_ = 0;

  // the batch in progress
  packet::PacketBatch* cur_ = nullptr;
  std::uint64_t arrival_ns_ = 0;
  const std::uint64_t* arrival_ = nullptr;  // per packet (paced), else arrival_ns_
  std::vector<std::uint32_t> order_;        // per-queue index lists, back to back
  std::vector<std::uint32_t> qoff_;         // queue q: order_[qoff_[q] .. qoff_[q+1])
  std::vector<std::uint32_t> pos_;          // next entry of order_ to append, per queue
  // paced
  std::vector<std::uint64_t> schedule_;
  std::uint64_t t0_ = 0;
  double period_ = 0;
  std::size_t chunk_ = 0, due_ = 0;
};

}  // namespace vnfkit::runtime
