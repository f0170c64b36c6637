#include "vnfkit/flow/exception_table.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::flow {

namespace {
constexpr std::size_t kInitialUnbounded = 1024;
// A bounded table is pre-sized up to this many entries (hardware-table sizes: never grows) and grows
// on demand beyond it, so neither a huge capacity argument nor a crafted snapshot claiming one
// allocates gigabytes up front.
constexpr std::size_t kMaxPresized = std::size_t{1} << 16;
constexpr std::size_t kGroup = 32;

std::size_t initial_entries(std::size_t capacity) {
  return capacity ? std::min(capacity, kMaxPresized) : kInitialUnbounded;
}
}  // namespace

ExceptionTable::ExceptionTable(std::size_t capacity) : capacity_(capacity) {
  if (capacity > 0xFFFFFFF0u) throw std::invalid_argument("capacity: must be < 2**32 - 16");
  index_.reset(initial_entries(capacity));
  keys_.reserve(initial_entries(capacity));
  targets_.reserve(initial_entries(capacity));
}

ExceptionTable::ExceptionTable(const ExceptionTable& o)
    : capacity_(o.capacity_), index_(o.index_), stats_(o.stats_) {
  keys_.reserve(o.keys_.capacity());
  targets_.reserve(o.targets_.capacity());
  keys_.assign(o.keys_.begin(), o.keys_.end());
  targets_.assign(o.targets_.begin(), o.targets_.end());
}

ExceptionTable& ExceptionTable::operator=(const ExceptionTable& o) {
  if (this != &o) *this = ExceptionTable(o);
  return *this;
}

std::size_t ExceptionTable::memory_bytes() const noexcept {
  return index_.memory_bytes() + keys_.capacity() * sizeof(FlowKey) + targets_.capacity() * 4;
}

void ExceptionTable::grow() {
  const std::size_t doubled = index_.max_entries() * 2;
  index_.reset(capacity_ ? std::min(doubled, capacity_) : doubled);
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    index_.insert(hash_key(keys_[i]), static_cast<std::uint32_t>(i));
  }
}

bool ExceptionTable::insert(const FlowKey& k, std::uint32_t target) {
  if (target == kNoTarget) throw std::invalid_argument("targets: 0xFFFFFFFF is reserved (it means no target)");
  const std::uint64_t h = hash_key(k);
  const std::uint32_t i = index_.find(k, h, [this](std::uint32_t s) -> const FlowKey& { return keys_[s]; });
  if (i != kNoSlot) {
    targets_[i] = target;
    ++stats_.updates;
    return true;
  }
  if (capacity_ != 0 && keys_.size() >= capacity_) {
    ++stats_.failed_inserts;
    return false;
  }
  if (keys_.size() >= index_.max_entries()) grow();
  index_.insert(h, static_cast<std::uint32_t>(keys_.size()));
  keys_.push_back(k);
  targets_.push_back(target);
  ++stats_.inserts;
  return true;
}

std::size_t ExceptionTable::insert(const FlowKey* keys, const std::uint32_t* targets, std::size_t n,
                                   std::uint8_t* ok) {
  for (std::size_t i = 0; i < n; ++i) {
    if (targets[i] == kNoTarget) {
      throw std::invalid_argument("targets: entry " + std::to_string(i) +
                                  " is 0xFFFFFFFF, which is reserved (it means no target)");
    }
  }
  std::size_t failed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool r = insert(keys[i], targets[i]);
    if (ok) ok[i] = r ? 1 : 0;
    failed += r ? 0 : 1;
  }
  return failed;
}

std::size_t ExceptionTable::count_new(const FlowKey* keys, std::size_t n) const {
  std::vector<FlowKey> fresh;
  for (std::size_t i = 0; i < n; ++i) {
    if (find(keys[i]) == kNoTarget) fresh.push_back(keys[i]);
  }
  std::sort(fresh.begin(), fresh.end(), [](const FlowKey& a, const FlowKey& b) {
    return std::memcmp(&a, &b, sizeof(FlowKey)) < 0;
  });
  return static_cast<std::size_t>(std::unique(fresh.begin(), fresh.end()) - fresh.begin());
}

bool ExceptionTable::erase(const FlowKey& k) {
  const std::uint64_t h = hash_key(k);
  const std::uint32_t i = index_.find(k, h, [this](std::uint32_t s) -> const FlowKey& { return keys_[s]; });
  if (i == kNoSlot) return false;
  index_.erase(h, i);
  const auto last = static_cast<std::uint32_t>(keys_.size() - 1);
  if (i != last) {
    index_.relabel(hash_key(keys_[last]), last, i);
    keys_[i] = keys_[last];
    targets_[i] = targets_[last];
  }
  keys_.pop_back();
  targets_.pop_back();
  ++stats_.removals;
  return true;
}

std::size_t ExceptionTable::erase(const FlowKey* keys, std::size_t n, std::uint8_t* removed) {
  std::size_t c = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool r = erase(keys[i]);
    if (removed) removed[i] = r ? 1 : 0;
    c += r ? 1 : 0;
  }
  return c;
}

void ExceptionTable::clear() {
  keys_.clear();
  targets_.clear();
  index_.reset(initial_entries(capacity_));
}

void ExceptionTable::lookup(const FlowKey* keys, std::size_t n, std::uint32_t* out) const noexcept {
  std::uint64_t h[kGroup];
  for (std::size_t base = 0; base < n; base += kGroup) {
    const std::size_t m = std::min(kGroup, n - base);
    for (std::size_t j = 0; j < m; ++j) {
      h[j] = hash_key(keys[base + j]);
      index_.prefetch(h[j]);
    }
    for (std::size_t j = 0; j < m; ++j) out[base + j] = find_hashed(keys[base + j], h[j]);
  }
}

void steer(std::span<const ExceptionTable* const> tables, const RangeTable& ranges, const FlowKey* keys,
           const std::uint32_t* flow_ids, std::size_t n, std::uint32_t* out) noexcept {
  // Only non-empty tables are probed; keys are hashed kDist ahead and their buckets prefetched.
  const ExceptionTable* live[8];
  std::size_t nl = 0;
  for (const ExceptionTable* t : tables) {
    if (t->size() && nl < 8) live[nl++] = t;
  }
  if (nl == 0 || tables.size() > 8) {
    if (tables.size() > 8) {  // rare: many tables, no pipelining
      for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t r = kNoTarget;
        const std::uint64_t h = hash_key(keys[i]);
        for (const ExceptionTable* t : tables) {
          r = t->find_hashed(keys[i], h);
          if (r != kNoTarget) break;
        }
        out[i] = r != kNoTarget ? r : ranges.find(flow_ids[i]);
      }
      return;
    }
    for (std::size_t i = 0; i < n; ++i) out[i] = ranges.find(flow_ids[i]);
    return;
  }
  constexpr std::size_t kDist = 8;
  constexpr std::size_t kRing = 32;  // > 2 * kDist, power of two
  std::uint64_t h[kRing];
  for (std::size_t i = 0; i < std::min(n, 2 * kDist); ++i) {
    h[i] = hash_key(keys[i]);
    for (std::size_t t = 0; t < nl; ++t) live[t]->prefetch(h[i]);
  }
  for (std::size_t i = 0; i < std::min(n, kDist); ++i) {
    for (std::size_t t = 0; t < nl; ++t) live[t]->prefetch_candidate(h[i]);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (i + 2 * kDist < n) {
      const std::uint64_t x = hash_key(keys[i + 2 * kDist]);
      h[(i + 2 * kDist) & (kRing - 1)] = x;
      for (std::size_t t = 0; t < nl; ++t) live[t]->prefetch(x);
    }
    if (i + kDist < n) {
      const std::uint64_t x = h[(i + kDist) & (kRing - 1)];
      for (std::size_t t = 0; t < nl; ++t) live[t]->prefetch_candidate(x);
    }
    std::uint32_t r = kNoTarget;
    const std::uint64_t hi = h[i & (kRing - 1)];
    for (std::size_t t = 0; t < nl && r == kNoTarget; ++t) r = live[t]->find_hashed(keys[i], hi);
    out[i] = r != kNoTarget ? r : ranges.find(flow_ids[i]);
  }
}

std::vector<std::uint8_t> ExceptionTable::snapshot() const {
  snapshot::Writer w("exception_table");
  w.put<std::uint64_t>(capacity_);
  w.put(stats_);
  w.put_array<FlowKey>(keys_);
  w.put_array<std::uint32_t>(targets_);
  return w.finish();
}

ExceptionTable ExceptionTable::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader rd(image, "exception_table");
  const auto cap = rd.get<std::uint64_t>();
  const auto st = rd.get<ExceptionStats>();
  auto keys = rd.get_array<FlowKey>();
  auto targets = rd.get_array<std::uint32_t>();
  rd.expect_end();
  if (cap > 0xFFFFFFF0u) throw snapshot::SnapshotError("exception_table snapshot: bad capacity");
  if (keys.size() != targets.size()) {
    throw snapshot::SnapshotError("exception_table snapshot: key and target counts differ");
  }
  if (cap != 0 && keys.size() > cap) {
    throw snapshot::SnapshotError("exception_table snapshot: more entries than its capacity");
  }
  ExceptionTable t(static_cast<std::size_t>(cap));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (targets[i] == kNoTarget || t.find(keys[i]) != kNoTarget) {
      throw snapshot::SnapshotError("exception_table snapshot: duplicate key or reserved target");
    }
    t.insert(keys[i], targets[i]);
  }
  t.stats_ = st;
  return t;
}

}  // namespace vnfkit::flow
