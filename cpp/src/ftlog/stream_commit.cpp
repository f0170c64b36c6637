#include "vnfkit/ftlog/stream_commit.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace vnfkit::ftlog {

StreamCommit::StreamCommit(std::size_t workers) : queues_(workers), bound_(workers, 0), stable_(workers, 0) {
  if (workers == 0) throw std::invalid_argument("workers: at least one");
}

const StreamCommit::Queue& StreamCommit::queue(std::size_t q) const {
  if (q >= queues_.size()) {
    throw std::out_of_range("queue: " + std::to_string(q) + " is not below " + std::to_string(queues_.size()));
  }
  return queues_[q];
}

StreamCommit::Queue& StreamCommit::queue(std::size_t q) {
  return const_cast<Queue&>(static_cast<const StreamCommit*>(this)->queue(q));
}

void StreamCommit::dispatched(std::uint64_t seq, std::uint64_t first_id, std::uint64_t packets,
                              std::span<const std::uint32_t> counts, std::uint64_t now_ns) {
  if (counts.size() != queues_.size()) {
    throw std::invalid_argument("counts: " + std::to_string(counts.size()) + " queues, expected " +
                                std::to_string(queues_.size()));
  }
  if (next_input_ && seq != *next_input_) {
    throw std::invalid_argument("seq: input " + std::to_string(seq) + " dispatched, expected " +
                                std::to_string(*next_input_));
  }
  if (!next_input_) next_record_ = seq;
  inputs_.push_back({seq, first_id, packets});
  for (std::size_t q = 0; q < queues_.size(); ++q) {
    if (!counts[q]) continue;
    Queue& Q = queues_[q];
    if (Q.expected.empty()) Q.busy_since_ns = now_ns;
    Q.expected.push_back(seq);
  }
  next_input_ = seq + 1;
}

std::uint64_t StreamCommit::returned(std::size_t q, std::span<const std::uint64_t> clock, std::uint64_t packets,
                                     std::uint64_t first, std::uint64_t last, std::uint64_t now_ns) {
  Queue& Q = queue(q);
  if (clock.size() != queues_.size()) {
    throw std::logic_error("clock: " + std::to_string(clock.size()) + " positions, expected " +
                           std::to_string(queues_.size()));
  }
  if (Q.expected.empty()) throw std::logic_error("queue " + std::to_string(q) + ": a slab came back with none in flight");
  const std::uint64_t seq = Q.expected.front();
  if (packets) {
    // inputs_ holds every input from the oldest uncut record on, contiguously
    const Input& in = inputs_.at(static_cast<std::size_t>(seq - inputs_.front().seq));
    if (!(in.first_id <= first && first <= last && last < in.first_id + in.packets)) {
      throw std::logic_error("queue " + std::to_string(q) + ": a slab of ids " + std::to_string(first) + ".." +
                             std::to_string(last) + " is not input " + std::to_string(seq) +
                             " (a slab must not span input batches)");
    }
  }
  Q.expected.pop_front();
  Q.slab_end.emplace_back(seq, clock[q]);
  Q.held.push_back({seq, packets});
  Q.clocks.insert(Q.clocks.end(), clock.begin(), clock.end());
  Q.busy_since_ns = now_ns;
  return seq;
}

bool StreamCommit::peek_record(std::uint64_t& seq, std::vector<std::uint64_t>& from,
                               std::vector<std::uint64_t>& to) const {
  if (!next_input_ || next_record_ >= *next_input_) return false;
  const std::uint64_t s = next_record_;
  for (const Queue& Q : queues_) {
    if (!Q.expected.empty() && Q.expected.front() <= s) return false;  // a slab of input s is still out
  }
  from = bound_;
  to = bound_;
  for (std::size_t q = 0; q < queues_.size(); ++q) {
    for (const auto& [in, end] : queues_[q].slab_end) {
      if (in > s) break;
      to[q] = end;
    }
  }
  seq = s;
  return true;
}

bool StreamCommit::cut_record(std::uint64_t& seq, std::vector<std::uint64_t>& from, std::vector<std::uint64_t>& to) {
  if (!peek_record(seq, from, to)) return false;
  for (auto& Q : queues_) {
    while (!Q.slab_end.empty() && Q.slab_end.front().first <= seq) Q.slab_end.pop_front();
  }
  bound_ = to;
  cut_.emplace_back(seq, bound_);
  while (!inputs_.empty() && inputs_.front().seq <= seq) inputs_.pop_front();
  ++next_record_;
  return true;
}

void StreamCommit::acknowledged(std::uint64_t det_acked, std::uint64_t input_acked) {
  det_acked_ = std::max(det_acked_, det_acked);
  while (!cut_.empty() && cut_.front().first < det_acked_) {
    stable_ = std::move(cut_.front().second);
    cut_.pop_front();
  }
  input_acked_ = std::max(input_acked_, std::min(input_acked, det_acked_));
}

std::size_t StreamCommit::release(std::size_t q, std::vector<std::uint64_t>& seqs) {
  Queue& Q = queue(q);
  const std::size_t w = queues_.size();
  std::size_t n = 0;
  while (!Q.held.empty()) {
    const Held& h = Q.held.front();
    if (h.seq >= input_acked_) break;
    bool covered = true;
    for (std::size_t t = 0; t < w && covered; ++t) covered = Q.clocks[t] <= stable_[t];
    if (!covered) break;
    seqs.push_back(h.seq);
    Q.held.pop_front();
    Q.clocks.erase(Q.clocks.begin(), Q.clocks.begin() + static_cast<std::ptrdiff_t>(w));
    ++n;
  }
  return n;
}

std::size_t StreamCommit::held_slabs() const noexcept {
  std::size_t n = 0;
  for (const Queue& Q : queues_) n += Q.held.size();
  return n;
}

std::uint64_t StreamCommit::held_packets() const noexcept {
  std::uint64_t n = 0;
  for (const Queue& Q : queues_) {
    for (const Held& h : Q.held) n += h.packets;
  }
  return n;
}

std::optional<std::uint64_t> StreamCommit::oldest_pending() const noexcept {
  std::optional<std::uint64_t> low;
  for (const Queue& Q : queues_) {
    if (!Q.expected.empty()) low = std::min(low.value_or(Q.expected.front()), Q.expected.front());
    if (!Q.held.empty()) low = std::min(low.value_or(Q.held.front().seq), Q.held.front().seq);
  }
  return low;
}

}  // namespace vnfkit::ftlog
