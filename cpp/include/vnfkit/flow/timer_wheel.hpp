// A hashed timer wheel driven by packet timestamps (never wall time), so expiry is deterministic
// and replays identically.
//
// Timers are identified by dense ids (a table's slot indices) and linked intrusively (next/prev
// arrays preallocated for `capacity` ids), so arming never allocates. A timer sits in the bucket of
// its deadline tick (deadline_ns / tick_ns, modulo the wheel size). Tables re-arm lazily: when a
// flow is touched its deadline moves later but it stays where it is; when the wheel reaches its
// bucket, advance() asks the owner for the id's *current* deadline and either fires it (deadline
// <= now) or re-links it further on. Expiry is therefore exact (fires iff deadline <= now) whatever
// the tick size; the tick only trades bucket visits for re-links. An owner whose deadline moves
// *earlier* (a TCP FIN shortening the timeout) must call arm() again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace vnfkit::flow {

inline constexpr std::uint64_t kNever = UINT64_MAX;

class TimerWheel {
 public:
  static constexpr std::int32_t kUnlinked = -2;

  TimerWheel(std::size_t capacity, std::uint64_t tick_ns, std::size_t buckets = 4096)
      : tick_ns_(tick_ns), mask_(buckets - 1), heads_(buckets, -1),
        next_(capacity, kUnlinked), prev_(capacity, kUnlinked) {
    if (tick_ns == 0) throw std::invalid_argument("tick_ns: must be > 0");
    if (buckets == 0 || (buckets & (buckets - 1)) != 0) {
      throw std::invalid_argument("buckets: must be a power of two");
    }
  }

  [[nodiscard]] std::uint64_t tick_ns() const noexcept { return tick_ns_; }
  [[nodiscard]] std::uint64_t cursor_tick() const noexcept { return cursor_; }
  void set_cursor_tick(std::uint64_t t) noexcept { cursor_ = t; }
  [[nodiscard]] std::size_t capacity() const noexcept { return next_.size(); }
  [[nodiscard]] bool armed(std::uint32_t id) const noexcept { return next_[id] != kUnlinked; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return heads_.size() * 4 + next_.size() * 8;
  }

  // (Re)links id into the bucket of deadline_ns; kNever disarms it.
  void arm(std::uint32_t id, std::uint64_t deadline_ns) noexcept {
    disarm(id);
    if (deadline_ns == kNever) return;
    std::uint64_t t = deadline_ns / tick_ns_;
    if (t < cursor_) t = cursor_;
    link(id, static_cast<std::size_t>(t) & mask_);
  }

  void disarm(std::uint32_t id) noexcept {
    if (next_[id] == kUnlinked) return;
    const std::int32_t n = next_[id];
    const std::int32_t p = prev_[id];
    if (p >= 0) {
      next_[static_cast<std::size_t>(p)] = n;
    } else {
      heads_[static_cast<std::size_t>(-p - 3)] = n;  // p encodes the bucket: -3 - bucket
    }
    if (n >= 0) prev_[static_cast<std::size_t>(n)] = p;
    next_[id] = prev_[id] = kUnlinked;
  }

  void clear() noexcept {
    for (auto& h : heads_) h = -1;
    for (std::size_t i = 0; i < next_.size(); ++i) next_[i] = prev_[i] = kUnlinked;
    cursor_ = 0;
  }

  // Moves the wheel to now_ns. For every visited timer, deadline_of(id) gives its current deadline;
  // if it is <= now_ns the timer is disarmed and fire(id) is called, otherwise it is re-linked.
  // Visits each bucket at most once per call. The cursor never moves backwards; an older now_ns
  // still fires exactly the timers due by it.
  template <typename DeadlineOf, typename Fire>
  void advance(std::uint64_t now_ns, DeadlineOf&& deadline_of, Fire&& fire) {
    const std::uint64_t now_tick = now_ns / tick_ns_;
    std::uint64_t first = cursor_;
    std::uint64_t last = cursor_;
    if (now_tick > cursor_) {
      last = now_tick;
      if (last - first > mask_) first = last - mask_;
      cursor_ = now_tick;  // re-links below land at >= the new cursor
    }
    // An older now_ns (now_tick < cursor_) only needs the cursor's bucket: every timer elsewhere
    // is armed at a tick > cursor_, so its deadline is later than now_ns.
    for (std::uint64_t t = first;; ++t) {
      const std::size_t b = static_cast<std::size_t>(t) & mask_;
      std::int32_t id = heads_[b];
      heads_[b] = -1;
      while (id >= 0) {
        const auto u = static_cast<std::uint32_t>(id);
        const std::int32_t nxt = next_[u];
        next_[u] = prev_[u] = kUnlinked;
        const std::uint64_t d = deadline_of(u);
        if (d <= now_ns) {
          fire(u);
        } else if (d != kNever) {
          std::uint64_t dt = d / tick_ns_;
          if (dt < cursor_) dt = cursor_;
          link(u, static_cast<std::size_t>(dt) & mask_);
        }
        id = nxt;
      }
      if (t == last) break;
    }
  }

 private:
  void link(std::uint32_t id, std::size_t b) noexcept {
    const std::int32_t h = heads_[b];
    next_[id] = h;
    prev_[id] = -3 - static_cast<std::int32_t>(b);
    if (h >= 0) prev_[static_cast<std::size_t>(h)] = static_cast<std::int32_t>(id);
    heads_[b] = static_cast<std::int32_t>(id);
  }

  std::uint64_t tick_ns_;
  std::size_t mask_;
  std::uint64_t cursor_ = 0;
  std::vector<std::int32_t> heads_;
  std::vector<std::int32_t> next_;
  std::vector<std::int32_t> prev_;
};

}  // namespace vnfkit::flow
