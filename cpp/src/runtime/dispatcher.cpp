#include "vnfkit/runtime/dispatcher.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "vnfkit/packet/parse.hpp"

namespace vnfkit::runtime {

namespace {
constexpr std::uint64_t kWaitSliceNs = 1'000'000;  // longest single futex sleep inside a call
}

Dispatcher::Dispatcher(std::vector<Lane> lanes, const classify::MultiQueueClassifier& classifier, DispatcherConfig cfg)
    : lanes_(std::move(lanes)), classifier_(classifier), cfg_(cfg) {
  if (lanes_.empty()) throw std::invalid_argument("lanes: need at least one ring");
  if (classifier_.num_queues() != lanes_.size()) {
    throw std::invalid_argument("classifier: has " + std::to_string(classifier_.num_queues()) + " queues, dispatcher has " +
                                std::to_string(lanes_.size()) + " rings");
  }
  if (cfg_.batch_size == 0) throw std::invalid_argument("batch_size: must be >= 1");
  for (const Lane& l : lanes_) {
    if (l.ring == nullptr || l.layout == nullptr) throw std::invalid_argument("lanes: null ring or layout");
    if (cfg_.batch_size > l.layout->max_packets()) {
      throw std::invalid_argument("batch_size: " + std::to_string(cfg_.batch_size) + " exceeds a ring's max_packets " +
                                  std::to_string(l.layout->max_packets()));
    }
  }
  stats_.resize(lanes_.size());
  qoff_.resize(lanes_.size() + 1);
  pos_.resize(lanes_.size());
}

void Dispatcher::clear_counters() noexcept {
  for (auto& s : stats_) {
    s.packets = s.forwarded = s.slabs = 0;
    s.drops.fill(0);
    s.latency.clear();
  }
}

void Dispatcher::prepare(packet::PacketBatch& b) {
  if (cur_ != nullptr) throw std::invalid_argument("batch: the previous batch is still being dispatched");
  if (cfg_.parse && !packet::parse_supports(b.linktype)) {
    throw std::invalid_argument("linktype: the parser does not handle link type " + std::to_string(b.linktype) + "; it handles " +
                                std::string(packet::kSupportedLinktypes));
  }
  b.validate();
  const std::size_t n = b.size();
  std::uint64_t cap = ~0ull;
  for (const Lane& l : lanes_) cap = std::min(cap, l.layout->data_capacity());
  const std::uint32_t* off = b.offsets.data();
  std::uint32_t longest = 0;
  for (std::size_t i = 0; i < n; ++i) longest = std::max(longest, off[i + 1] - off[i]);
  if (longest > cap) {
    std::size_t i = 0;
    while (off[i + 1] - off[i] <= cap) ++i;
    throw std::invalid_argument("batch: packet " + std::to_string(i) + " (" + std::to_string(off[i + 1] - off[i]) +
                                " bytes) does not fit an empty slab (" + std::to_string(cap) + " bytes); raise slab_bytes");
  }
  if (cfg_.assign_ids) {
    std::uint64_t* id = b.packet_id.data();
    for (std::size_t i = 0; i < n; ++i) id[i] = next_id_ + i;
    next_id_ += n;
  }
  if (cfg_.parse) packet::parse_batch(b);
  order_.resize(n);
  classifier_.classify(b, order_.data(), qoff_.data());
  for (std::size_t q = 0; q < lanes_.size(); ++q) pos_[q] = qoff_[q];
  cur_ = &b;
}

bool Dispatcher::dispatch(packet::PacketBatch& b, std::uint64_t arrival_ns, std::uint64_t deadline_ns) {
  prepare(b);
  arrival_ns_ = arrival_ns;
  arrival_ = nullptr;
  return resume(deadline_ns);
}

bool Dispatcher::resume(std::uint64_t deadline_ns) {
  const bool all = cur_ == nullptr || push(~0ull, deadline_ns);
  release_ready();
  flush_due(steady_now_ns(), false);
  if (all) cur_ = nullptr;
  return all;
}

void Dispatcher::commit(std::size_t q) {
  SlabRing& r = *lanes_[q].ring;
  r.commit_fill();
  if (r.can_fill()) lanes_[q].layout->reset(r.slab(r.fill_cursor()));
}

bool Dispatcher::push(std::uint64_t limit, std::uint64_t deadline_ns) {
  const packet::PacketBatch& b = *cur_;
  bool all = true;
  for (std::size_t q = 0; q < lanes_.size(); ++q) {
    SlabRing& r = *lanes_[q].ring;
    const SlabLayout& lay = *lanes_[q].layout;
    std::uint32_t end = qoff_[q + 1];
    if (limit < cur_->size()) {  // paced: only the packets due; queue lists are in arrival order
      end = pos_[q];
      while (end < qoff_[q + 1] && order_[end] < limit) ++end;
    }
    while (pos_[q] < end) {
      if (!r.can_fill()) {
        release_ready();
        if (!r.can_fill()) {
          const std::uint64_t now = steady_now_ns();
          if (now >= deadline_ns) {
            all = false;
            break;
          }
          r.wait_output(std::min(deadline_ns - now, kWaitSliceNs), cfg_.spin_ns);
          continue;
        }
      }
      std::byte* slab = r.slab(r.fill_cursor());
      const std::size_t k = lay.append(slab, b, order_.data() + pos_[q], end - pos_[q], arrival_ns_, arrival_);
      pos_[q] += static_cast<std::uint32_t>(k);
      const std::uint32_t held = SlabLayout::header(slab).packets;
      if (held >= cfg_.batch_size || (k == 0 && held > 0)) commit(q);  // full: packets or bytes
    }
  }
  return all;
}

void Dispatcher::release_one(std::size_t q, std::uint64_t now) {
  SlabRing& r = *lanes_[q].ring;
  const SlabLayout& lay = *lanes_[q].layout;
  std::byte* slab = r.slab(r.release_cursor());
  const std::uint32_t n = SlabLayout::header(slab).packets;
  const std::uint64_t* arr = lay.arrival(slab);
  const std::uint16_t* port = lay.port(slab);
  const std::uint8_t* drop = lay.drop(slab);
  QueueCounters& s = stats_[q];
  std::uint64_t fwd = 0;
  for (std::uint32_t i = 0; i < n; ++i) fwd += port[i] != 0;
  if (fwd < n) {
    for (std::uint32_t i = 0; i < n; ++i) {
      if (port[i] == 0) ++s.drops[drop[i]];
    }
  }
  // Packets of one input batch share their arrival time: one histogram update per run.
  for (std::uint32_t i = 0; i < n;) {
    const std::uint64_t a = arr[i];
    std::uint32_t e = i + 1;
    while (e < n && arr[e] == a) ++e;
    s.latency.record_n(now > a ? now - a : 0, e - i);
    i = e;
  }
  s.packets += n;
  s.forwarded += fwd;
  ++s.slabs;
  if (collect_) outbox_.emplace_back(static_cast<std::uint16_t>(q), lay.copy(slab));
  const bool was_full = !r.can_fill();
  r.commit_release();
  if (was_full) lay.reset(r.slab(r.fill_cursor()));
}

std::size_t Dispatcher::release_ready() {
  std::size_t done = 0;
  for (std::size_t q = 0; q < lanes_.size(); ++q) {
    SlabRing& r = *lanes_[q].ring;
    std::uint32_t ready = r.outputs_ready();
    if (ready == 0) continue;
    const std::uint64_t now = steady_now_ns();
    for (; ready > 0; --ready, ++done) release_one(q, now);
  }
  return done;
}

void Dispatcher::flush_due(std::uint64_t now, bool force) {
  for (std::size_t q = 0; q < lanes_.size(); ++q) {
    SlabRing& r = *lanes_[q].ring;
    if (!r.can_fill()) continue;
    const SlabHeader& h = SlabLayout::header(r.slab(r.fill_cursor()));
    if (h.packets == 0) continue;
    if (force || (now >= h.opened_ns + cfg_.flush_ns && !(cfg_.hold_while_busy && r.unprocessed() > 0))) commit(q);
  }
}

bool Dispatcher::drain(std::uint64_t deadline_ns) {
  while (true) {
    flush_due(0, true);
    release_ready();
    bool idle = true;
    for (std::size_t q = 0; q < lanes_.size(); ++q) {
      SlabRing& r = *lanes_[q].ring;
      const bool open = r.can_fill() && SlabLayout::header(r.slab(r.fill_cursor())).packets > 0;
      if (r.in_flight() == 0 && !open) continue;
      idle = false;
      const std::uint64_t now = steady_now_ns();
      if (now >= deadline_ns) return false;
      if (r.outputs_ready() == 0) r.wait_output(std::min(deadline_ns - now, kWaitSliceNs), cfg_.spin_ns);
    }
    if (idle) return true;
  }
}

void Dispatcher::begin_paced(packet::PacketBatch& trace, std::uint64_t start_in_ns, double period_ns, std::size_t chunk) {
  if (!(period_ns > 0)) throw std::invalid_argument("period_ns: must be > 0");
  if (chunk == 0) throw std::invalid_argument("chunk: must be >= 1");
  prepare(trace);
  const std::size_t n = trace.size();
  schedule_.resize(n);
  const std::uint64_t t0_ns = steady_now_ns() + start_in_ns;
  for (std::size_t i = 0; i < n; ++i) schedule_[i] = t0_ns + static_cast<std::uint64_t>(static_cast<double>(i) * period_ns);
  arrival_ = schedule_.data();
  arrival_ns_ = 0;
  t0_ = t0_ns;
  period_ = period_ns;
  chunk_ = chunk;
  due_ = 0;
}

bool Dispatcher::pace(std::uint64_t deadline_ns) {
  if (cur_ == nullptr) return true;
  const std::size_t n = cur_->size();
  while (true) {
    const std::uint64_t now = steady_now_ns();
    if (now >= t0_) {
      const auto sched = static_cast<std::size_t>(static_cast<double>(now - t0_) / period_) + 1;
      due_ = std::min({n, sched, due_ + chunk_});
      const bool pushed = push(due_, deadline_ns);
      release_ready();
      flush_due(steady_now_ns(), false);
      if (pushed && due_ == n) {
        cur_ = nullptr;
        return true;
      }
    }
    if (steady_now_ns() >= deadline_ns) return false;
  }
}

}  // namespace vnfkit::runtime
