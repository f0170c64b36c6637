#include "vnfkit/ftlog/output_commit.hpp"

#include <limits>
#include <stdexcept>
#include <string>

namespace vnfkit::ftlog {

OutputCommit::OutputCommit(std::size_t threads, std::size_t queues) {
  if (threads == 0 || threads > 4096) throw std::invalid_argument("threads: must be in [1, 4096]");
  if (queues == 0 || queues > 65536) throw std::invalid_argument("queues: must be in [1, 65536]");
  for (std::size_t t = 0; t < threads; ++t) acked_.push_back(std::make_unique<Acked>());
  for (std::size_t q = 0; q < queues; ++q) queues_.push_back(std::make_unique<Queue>());
}

void OutputCommit::tag(std::size_t queue, std::span<const std::uint64_t> packet_ids, std::span<const std::uint64_t> positions) {
  if (queue >= queues_.size()) throw std::invalid_argument("queue: out of range");
  if (positions.size() > acked_.size()) {
    throw std::invalid_argument("positions: " + std::to_string(positions.size()) + " entries, but only " +
                                std::to_string(acked_.size()) + " threads");
  }
  if (packet_ids.empty()) return;
  Group g{std::vector<std::uint64_t>(acked_.size(), 0), packet_ids.size()};
  for (std::size_t t = 0; t < positions.size(); ++t) g.clock[t] = positions[t];
  Queue& q = *queues_[queue];
  std::lock_guard lock(q.mu);
  q.packets.insert(q.packets.end(), packet_ids.begin(), packet_ids.end());
  q.groups.push_back(std::move(g));
}

void OutputCommit::ack(std::size_t thread, std::uint64_t position) {
  if (thread >= acked_.size()) throw std::invalid_argument("thread: out of range");
  Acked& a = *acked_[thread];
  std::lock_guard lock(a.mu);
  std::uint64_t p = std::max(a.prefix.load(std::memory_order_relaxed), position);
  // Merge pending out-of-order ranges now contiguous with the prefix.
  while (!a.pending.empty() && a.pending.begin()->first <= p) {
    p = std::max(p, a.pending.begin()->second);
    a.pending.erase(a.pending.begin());
  }
  a.prefix.store(p, std::memory_order_release);
}

void OutputCommit::ack_range(std::size_t thread, std::uint64_t first, std::uint64_t count) {
  if (thread >= acked_.size()) throw std::invalid_argument("thread: out of range");
  if (count == 0) return;
  if (count > std::numeric_limits<std::uint64_t>::max() - first) {
    throw std::invalid_argument("count: first + count overflows 2**64");
  }
  {
    Acked& a = *acked_[thread];
    std::lock_guard lock(a.mu);
    if (first > a.prefix.load(std::memory_order_relaxed)) {
      auto& end = a.pending[first];
      end = std::max(end, first + count);
      return;
    }
  }
  ack(thread, first + count);
}

std::uint64_t OutputCommit::acked(std::size_t thread) const {
  if (thread >= acked_.size()) throw std::invalid_argument("thread: out of range");
  return acked_[thread]->prefix.load(std::memory_order_acquire);
}

std::size_t OutputCommit::release(std::size_t queue, std::vector<std::uint64_t>& out) {
  if (queue >= queues_.size()) throw std::invalid_argument("queue: out of range");
  std::vector<std::uint64_t> stable(acked_.size());
  for (std::size_t t = 0; t < acked_.size(); ++t) stable[t] = acked_[t]->prefix.load(std::memory_order_acquire);
  Queue& q = *queues_[queue];
  std::lock_guard lock(q.mu);
  std::size_t released = 0;
  while (!q.groups.empty()) {
    const Group& g = q.groups.front();
    bool ok = true;
    for (std::size_t t = 0; t < stable.size() && ok; ++t) ok = g.clock[t] <= stable[t];
    if (!ok) break;
    const std::size_t at = out.size();
    out.resize(at + g.remaining);
    for (std::size_t i = 0; i < g.remaining; ++i) {
      out[at + i] = q.packets.front();
      q.packets.pop_front();
    }
    released += g.remaining;
    q.groups.pop_front();
  }
  return released;
}

std::size_t OutputCommit::pending(std::size_t queue) const {
  if (queue >= queues_.size()) throw std::invalid_argument("queue: out of range");
  const Queue& q = *queues_[queue];
  std::lock_guard lock(q.mu);
  return q.packets.size();
}

}  // namespace vnfkit::ftlog
