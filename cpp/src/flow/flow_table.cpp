#include "vnfkit/flow/flow_table.hpp"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::flow {
namespace {

constexpr std::uint32_t kMaxCapacity = 1u << 30;

std::uint64_t auto_tick(const FlowTableConfig& c) {
  if (c.tick_ns) return c.tick_ns;
  std::uint64_t t = kNever;
  for (const auto& k : c.classes) t = std::min(t, k.timeout_ns);
  if (t == kNever) return 1'000'000'000ull;
  t /= 256;  // a timeout spans ~256 ticks: few re-links, few empty visits
  return std::max<std::uint64_t>(t, 1000);
}

// The configuration with its classes filled in (the two legacy classes when none are given).
FlowTableConfig validated(FlowTableConfig c) {
  if (c.capacity == 0 || c.capacity > kMaxCapacity) {
    throw std::invalid_argument("capacity: must be between 1 and 2**30");
  }
  if (c.value_size == 0 || c.value_size > 4096) {
    throw std::invalid_argument("value_size: must be between 1 and 4096 bytes");
  }
  if (c.idle_timeout_ns == 0) throw std::invalid_argument("idle_timeout: must be > 0 (or never)");
  if (c.close_timeout_ns == 0) throw std::invalid_argument("close_timeout: must be > 0 (or never)");
  if (c.classes.empty()) {
    c.classes = {TimeoutClass{c.idle_timeout_ns, 1}, TimeoutClass{std::min(c.idle_timeout_ns, c.close_timeout_ns), 1}};
    c.class_of_proto.fill(0);
  }
  const std::size_t n = c.classes.size();
  if (n > kMaxTimeoutClasses) {
    throw std::invalid_argument("timeout_classes: at most " + std::to_string(kMaxTimeoutClasses) + " classes");
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (c.classes[i].timeout_ns == 0) {
      throw std::invalid_argument("timeout_classes: class " + std::to_string(i) + " has a timeout of 0 (must be > 0)");
    }
    const std::uint8_t o = c.classes[i].on_close;
    if (o != kSameClass && o >= n) {
      throw std::invalid_argument("timeout_classes: class " + std::to_string(i) + " closes into class " +
                                  std::to_string(o) + ", which does not exist");
    }
  }
  for (std::size_t p = 0; p < c.class_of_proto.size(); ++p) {
    if (c.class_of_proto[p] >= n) {
      throw std::invalid_argument("protocol_classes: protocol " + std::to_string(p) + " maps to class " +
                                  std::to_string(c.class_of_proto[p]) + ", which does not exist");
    }
  }
  return c;
}

// values_ holds capacity * value_size bytes rounded up to whole cache lines; the rounded size is
// recomputed on free (it depends only on the configuration).
std::size_t values_bytes(const FlowTableConfig& c) {
  return (std::size_t{c.capacity} * c.value_size + 63) / 64 * 64;
}
std::uint8_t* alloc_values(std::size_t bytes) {
  std::uint8_t* p = TableAllocator<std::uint8_t>{}.allocate(bytes);
  std::memset(p, 0, bytes);
  return p;
}
void free_values(std::uint8_t* p, std::size_t bytes) noexcept {
  if (p) TableAllocator<std::uint8_t>{}.deallocate(p, bytes);
}

// 64 .. 4096 buckets: small tables keep a small wheel (a bucket costs 4 bytes).
std::size_t wheel_buckets(std::uint32_t capacity) {
  return std::min<std::size_t>(4096, std::bit_ceil(std::max<std::size_t>(64, capacity)));
}

bool key_less(const FlowKey& a, const FlowKey& b) noexcept {
  return std::memcmp(&a, &b, sizeof(FlowKey)) < 0;
}

}  // namespace

FlowTable::FlowTable(const FlowTableConfig& cfg)
    : cfg_(validated(cfg)),
      entries_(cfg.capacity),
      values_(alloc_values(values_bytes(cfg))),
      free_(cfg.capacity),
      index_(cfg.capacity),
      wheel_(cfg.capacity, auto_tick(cfg_), wheel_buckets(cfg.capacity)),
      dirty_(cfg.capacity, 0),
      free_low_(cfg.capacity) {
  cfg_.tick_ns = wheel_.tick_ns();
  for (std::size_t c = 0; c < cfg_.classes.size(); ++c) timeout_[c] = cfg_.classes[c].timeout_ns;
  for (std::uint32_t i = 0; i < cfg_.capacity; ++i) free_[i] = cfg_.capacity - 1 - i;
}

FlowTable::~FlowTable() { free_values(values_, values_bytes(cfg_)); }

FlowTable::FlowTable(FlowTable&& o) noexcept
    : cfg_(o.cfg_), timeout_(o.timeout_), entries_(std::move(o.entries_)), values_(o.values_), free_(std::move(o.free_)),
      index_(std::move(o.index_)), wheel_(std::move(o.wheel_)), size_(o.size_), now_(o.now_),
      stats_(o.stats_), user_meta_(std::move(o.user_meta_)), due_(std::move(o.due_)), dirty_(std::move(o.dirty_)),
      free_low_(o.free_low_), delta_seq_(o.delta_seq_) {
  o.values_ = nullptr;
  o.size_ = 0;
}

FlowTable& FlowTable::operator=(FlowTable&& o) noexcept {
  if (this != &o) {
    free_values(values_, values_bytes(cfg_));
    cfg_ = o.cfg_;
    timeout_ = o.timeout_;
    entries_ = std::move(o.entries_);
    values_ = o.values_;
    o.values_ = nullptr;
    free_ = std::move(o.free_);
    index_ = std::move(o.index_);
    wheel_ = std::move(o.wheel_);
    size_ = o.size_;
    o.size_ = 0;
    now_ = o.now_;
    stats_ = o.stats_;
    user_meta_ = std::move(o.user_meta_);
    due_ = std::move(o.due_);
    dirty_ = std::move(o.dirty_);
    free_low_ = o.free_low_;
    delta_seq_ = o.delta_seq_;
  }
  return *this;
}

std::size_t FlowTable::memory_bytes() const noexcept {
  return entries_.size() * sizeof(FlowEntry) + std::size_t{cfg_.capacity} * cfg_.value_size +
         std::size_t{cfg_.capacity} * 4 + index_.memory_bytes() + wheel_.memory_bytes();
}

std::uint64_t FlowTable::deadline(std::uint32_t slot) const noexcept {
  const FlowEntry& e = entries_[slot];
  if (!(e.state & FlowEntry::kLive)) return kNever;
  return deadline_of(e);
}

void FlowTable::close(std::uint32_t s) noexcept {
  FlowEntry& e = entries_[s];
  const std::uint8_t next = cfg_.classes[e.tclass].on_close;
  const bool moved = next != kSameClass && next != e.tclass;
  if ((e.state & FlowEntry::kClosing) && !moved) return;
  e.state |= FlowEntry::kClosing;
  if (moved) {
    e.tclass = next;
    wheel_.arm(s, deadline_of(e));  // the deadline may move earlier: re-link now
  }
}

void FlowTable::check_classes(const std::uint8_t* classes, const std::uint32_t* rows, std::size_t n) const {
  if (!classes) return;
  const std::size_t nc = cfg_.classes.size();
  for (std::size_t j = 0; j < n; ++j) {
    const std::uint8_t c = classes[rows ? rows[j] : j];
    if (c >= nc) {
      throw std::invalid_argument("timeout_class: " + std::to_string(c) + " is not a class (" + std::to_string(nc) +
                                  " classes)");
    }
  }
}

// Software pipeline over the batch, three stages kDist keys apart: key i+2D is hashed and its
// home bucket prefetched, key i+D's bucket is read (the first signature match's record is
// prefetched), and key i is resolved with that probe. Each miss to memory thus overlaps with the
// work on ~D other keys; the loop is split so the steady state runs without bounds checks.
namespace {
constexpr std::size_t kDist = 16;
constexpr std::size_t kRing = 64;  // > 2 * kDist, power of two
static_assert(kRing > 2 * kDist && (kRing & (kRing - 1)) == 0);
}  // namespace

template <typename KeyAt, typename Resolve>
void FlowTable::pipeline(KeyAt&& key_at, std::size_t n, Resolve&& resolve) noexcept {
  KeyIndex::Probe p[kRing];
  const auto stage_a = [&](std::size_t j) { p[j & (kRing - 1)] = index_.begin(hash_key(key_at(j))); };
  const auto stage_b = [&](std::size_t j) {
    KeyIndex::Probe& q = p[j & (kRing - 1)];
    index_.peek(q);
    if (q.cand != kNoSlot) __builtin_prefetch(&entries_[q.cand]);
  };
  for (std::size_t j = 0; j < std::min(n, 2 * kDist); ++j) stage_a(j);
  for (std::size_t j = 0; j < std::min(n, kDist); ++j) stage_b(j);
  std::size_t i = 0;
  for (; i + 2 * kDist < n; ++i) {
    stage_a(i + 2 * kDist);
    stage_b(i + kDist);
    resolve(i, p[i & (kRing - 1)]);
  }
  for (; i + kDist < n; ++i) {
    stage_b(i + kDist);
    resolve(i, p[i & (kRing - 1)]);
  }
  for (; i < n; ++i) resolve(i, p[i & (kRing - 1)]);
}

namespace {
struct Identity {
  std::size_t operator()(std::size_t i) const noexcept { return i; }
};
struct Rows {
  const std::uint32_t* rows;
  std::size_t operator()(std::size_t i) const noexcept { return rows[i]; }
};
void check_rows(const std::uint32_t* rows, std::size_t n, std::size_t n_rows) {
  for (std::size_t j = 0; j < n; ++j) {
    if (rows[j] >= n_rows) {
      throw std::invalid_argument("indices: " + std::to_string(rows[j]) + " is out of range (" +
                                  std::to_string(n_rows) + " rows)");
    }
  }
}
}  // namespace

void FlowTable::lookup(const FlowKey* keys, std::size_t n, std::uint32_t* slots) noexcept {
  lookup_impl(keys, Identity{}, n, slots);
}

void FlowTable::lookup_rows(const FlowKey* keys, std::size_t n_rows, const std::uint32_t* rows, std::size_t n,
                            std::uint32_t* slots) {
  check_rows(rows, n, n_rows);
  lookup_impl(keys, Rows{rows}, n, slots);
}

std::size_t FlowTable::lookup_or_insert(const FlowKey* keys, const std::uint32_t* flow_ids,
                                        const std::uint64_t* ts_ns, const std::uint8_t* tcp_flags,
                                        std::size_t n, std::uint32_t* slots, std::uint8_t* is_new,
                                        const std::uint8_t* classes, std::uint8_t* stale) {
  check_classes(classes, nullptr, n);
  return lookup_or_insert_impl(keys, flow_ids, ts_ns, tcp_flags, classes, Identity{}, n, slots, is_new, stale);
}

std::size_t FlowTable::lookup_or_insert_rows(const FlowKey* keys, const std::uint32_t* flow_ids,
                                             const std::uint64_t* ts_ns, const std::uint8_t* tcp_flags,
                                             std::size_t n_rows, const std::uint32_t* rows, std::size_t n,
                                             std::uint32_t* slots, std::uint8_t* is_new,
                                             const std::uint8_t* classes, std::uint8_t* stale) {
  check_rows(rows, n, n_rows);
  check_classes(classes, rows, n);
  return lookup_or_insert_impl(keys, flow_ids, ts_ns, tcp_flags, classes, Rows{rows}, n, slots, is_new, stale);
}

std::size_t FlowTable::touch(const std::uint32_t* slots, std::size_t n, const std::uint64_t* ts_ns,
                             const std::uint8_t* tcp_flags, const std::uint32_t* rows, std::size_t n_rows,
                             std::uint8_t* stale) {
  if (rows) {
    check_rows(rows, n, n_rows);
  } else if (n > n_rows) {
    throw std::invalid_argument("ts_ns: " + std::to_string(n_rows) + " rows for " + std::to_string(n) + " slots");
  }
  for (std::size_t j = 0; j < n; ++j) {
    if (!live(slots[j])) throw std::invalid_argument("slots: " + std::to_string(slots[j]) + " is not a live slot");
  }
  constexpr std::size_t kAhead = 12;
  for (std::size_t j = 0; j < std::min(n, kAhead); ++j) __builtin_prefetch(&entries_[slots[j]], 1);
  std::size_t count = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (j + kAhead < n) __builtin_prefetch(&entries_[slots[j + kAhead]], 1);
    const std::uint32_t s = slots[j];
    const std::size_t r = rows ? rows[j] : j;
    mark(s);
    FlowEntry& e = entries_[s];
    const std::uint64_t ts = ts_ns[r];
    const bool was_stale = deadline_of(e) <= ts;
    if (stale) stale[j] = was_stale ? 1 : 0;
    count += was_stale ? 1 : 0;
    if (ts > e.last_ts) e.last_ts = ts;
    if (tcp_flags && e.key.proto == 6 && (tcp_flags[r] & (kTcpFin | kTcpRst))) close(s);
  }
  return count;
}

void FlowTable::set_class(const std::uint32_t* slots, std::size_t n, std::uint8_t cls) {
  if (cls >= cfg_.classes.size()) {
    throw std::invalid_argument("timeout_class: " + std::to_string(cls) + " is not a class (" +
                                std::to_string(cfg_.classes.size()) + " classes)");
  }
  for (std::size_t j = 0; j < n; ++j) {
    if (!live(slots[j])) throw std::invalid_argument("slots: " + std::to_string(slots[j]) + " is not a live slot");
  }
  for (std::size_t j = 0; j < n; ++j) {
    mark(slots[j]);  // the caller may write the value record of a slot it names
    FlowEntry& e = entries_[slots[j]];
    if (e.tclass == cls) continue;
    e.tclass = cls;
    wheel_.arm(slots[j], deadline_of(e));
  }
}

template <typename Row>
void FlowTable::lookup_impl(const FlowKey* keys, Row row, std::size_t n, std::uint32_t* slots) noexcept {
  // No prefetch of the value records: a pure lookup fetches only index and entry lines (a caller
  // that wants the values reads them itself; lookup_or_insert, whose caller updates them, does).
  std::size_t hits = 0;
  const auto key_at = [&](std::size_t i) -> const FlowKey& { return keys[row(i)]; };
  pipeline(key_at, n, [&](std::size_t i, const KeyIndex::Probe& p) {
    const FlowKey& k = key_at(i);
    std::uint32_t s = p.cand;
    // Nothing is inserted during a pure lookup, so the probe's "sole" verdict still holds.
    if (s == kNoSlot || !key_equal(entries_[s].key, k)) s = p.sole ? kNoSlot : find(k, p.h);
    slots[i] = s;
    hits += s != kNoSlot;
  });
  mark_found(slots, n);  // the caller may write the value records it found
  stats_.lookups += n;
  stats_.hits += hits;
  stats_.misses += n - hits;
}

template <typename Row>
std::size_t FlowTable::lookup_or_insert_impl(const FlowKey* keys, const std::uint32_t* flow_ids,
                                             const std::uint64_t* ts_ns, const std::uint8_t* tcp_flags,
                                             const std::uint8_t* classes, Row row, std::size_t n,
                                             std::uint32_t* slots, std::uint8_t* is_new,
                                             std::uint8_t* stale) noexcept {
  std::size_t hits = 0, inserted = 0, failed = 0;
  const std::size_t vs = cfg_.value_size;
  const auto key_at = [&](std::size_t i) -> const FlowKey& { return keys[row(i)]; };
  pipeline(key_at, n, [&](std::size_t i, const KeyIndex::Probe& p) {
    const std::size_t r = row(i);
    const FlowKey& k = keys[r];
    const std::uint64_t h = p.h;
    const std::uint64_t ts = ts_ns[r];
    const bool closes = tcp_flags && k.proto == 6 && (tcp_flags[r] & (kTcpFin | kTcpRst));
    // The probe was taken before this batch's earlier inserts: its candidate, if it is the key,
    // is right (nothing is removed here), but a miss must be confirmed against the index as it is.
    std::uint32_t s = p.cand;
    if (s == kNoSlot || !key_equal(entries_[s].key, k)) s = find(k, h);
    if (s != kNoSlot) {
      ++hits;
      __builtin_prefetch(values_ + std::size_t{s} * vs, 1);  // the caller updates the record next
      FlowEntry& e = entries_[s];
      if (stale) stale[i] = deadline_of(e) <= ts ? 1 : 0;
      if (ts > e.last_ts) e.last_ts = ts;
      if (closes) close(s);
      if (is_new) is_new[i] = 0;
    } else if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
      note_free_pop();
      FlowEntry& e = entries_[s];
      e.key = k;
      e.last_ts = ts;
      e.flow_id = flow_ids ? flow_ids[r] : 0;
      e.state = FlowEntry::kLive;
      e.tclass = classes ? classes[r] : cfg_.class_of_proto[k.proto];
      if (closes) {
        e.state |= FlowEntry::kClosing;
        const std::uint8_t next = cfg_.classes[e.tclass].on_close;
        if (next != kSameClass) e.tclass = next;
      }
      std::memset(values_ + std::size_t{s} * vs, 0, vs);
      index_.insert(h, s);
      wheel_.arm(s, deadline_of(e));
      ++size_;
      ++inserted;
      if (is_new) is_new[i] = 1;
      if (stale) stale[i] = 0;
    } else {
      ++failed;
      if (is_new) is_new[i] = 0;
      if (stale) stale[i] = 0;
    }
    slots[i] = s;
  });
  stats_.lookups += n;
  stats_.hits += hits;
  stats_.misses += n - hits;
  stats_.inserts += inserted;
  stats_.failed_inserts += failed;
  mark_found(slots, n);  // every slot found or inserted (the caller updates their records)
  return inserted;
}

void FlowTable::free_slot(std::uint32_t slot) noexcept {
  FlowEntry& e = entries_[slot];
  mark(slot);
  index_.erase(hash_key(e.key), slot);
  wheel_.disarm(slot);
  e = FlowEntry{};
  free_.push_back(slot);
  --size_;
}

bool FlowTable::remove_slot(std::uint32_t slot) noexcept {
  if (!live(slot)) return false;
  free_slot(slot);
  ++stats_.removals;
  return true;
}

std::size_t FlowTable::remove(const FlowKey* keys, std::size_t n, std::uint8_t* removed) noexcept {
  std::size_t c = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t s = find(keys[i], hash_key(keys[i]));
    const bool r = s != kNoSlot;
    if (r) {
      free_slot(s);
      ++c;
    }
    if (removed) removed[i] = r ? 1 : 0;
  }
  stats_.removals += c;
  return c;
}

std::size_t FlowTable::expire(std::uint64_t now_ns, Expired& out) {
  out.clear();
  due_.clear();
  if (now_ns > now_) now_ = now_ns;
  wheel_.advance(
      now_ns, [this](std::uint32_t s) { return deadline(s); },
      [this](std::uint32_t s) { due_.emplace_back(deadline(s), s); });
  std::sort(due_.begin(), due_.end(), [this](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return key_less(entries_[a.second].key, entries_[b.second].key);
  });
  const std::size_t n = due_.size();
  const std::size_t vs = cfg_.value_size;
  out.slots.resize(n);
  out.entries.resize(n);
  out.deadlines.resize(n);
  out.reasons.resize(n);
  out.values.resize(n * vs);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t s = due_[i].second;
    out.slots[i] = s;
    out.entries[i] = entries_[s];
    out.deadlines[i] = due_[i].first;
    const bool closed = entries_[s].state & FlowEntry::kClosing;
    out.reasons[i] = static_cast<std::uint8_t>(closed ? ExpireReason::kClosed : ExpireReason::kIdle);
    if (closed) ++stats_.expired_closed; else ++stats_.expired_idle;
    std::memcpy(out.values.data() + i * vs, values_ + std::size_t{s} * vs, vs);
    free_slot(s);
  }
  return n;
}

std::vector<std::uint32_t> FlowTable::active_in_range(std::uint32_t lo, std::uint32_t hi,
                                                      std::uint64_t since_ns) const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t s = 0; s < cfg_.capacity; ++s) {
    const FlowEntry& e = entries_[s];
    if ((e.state & FlowEntry::kLive) && e.flow_id >= lo && e.flow_id <= hi && e.last_ts >= since_ns) {
      out.push_back(s);
      mark(s);  // handed to the caller, who may write its value record
    }
  }
  return out;
}

namespace {
std::vector<std::uint32_t> live_of(const FlowEntry* es, std::uint32_t capacity, std::size_t size) {
  std::vector<std::uint32_t> out;
  out.reserve(size);
  for (std::uint32_t s = 0; s < capacity; ++s) {
    if (es[s].state & FlowEntry::kLive) out.push_back(s);
  }
  return out;
}
}  // namespace

std::vector<std::uint32_t> FlowTable::live_slots(bool mark_them) const {
  auto out = live_of(entries_.data(), cfg_.capacity, size_);
  if (mark_them) {
    for (auto s : out) mark(s);  // handed to the caller, who may write their value records
  }
  return out;
}

void FlowTable::clear() {
  for (auto& e : entries_) e = FlowEntry{};
  std::memset(values_, 0, std::size_t{cfg_.capacity} * cfg_.value_size);
  free_.resize(cfg_.capacity);
  for (std::uint32_t i = 0; i < cfg_.capacity; ++i) free_[i] = cfg_.capacity - 1 - i;
  index_.reset(cfg_.capacity);
  const std::uint64_t cursor = wheel_.cursor_tick();
  wheel_.clear();
  wheel_.set_cursor_tick(cursor);
  size_ = 0;
  mark_all_dirty();
}

// Payload: config | cursor tick | now | stats | user meta | free stack | live slots | their entries
// (key, last_ts, flow_id, state) | their values | timeout classes. Written by the table and by a
// FlowTableImage alike, so the two images of one state are the same bytes.
namespace {
std::vector<std::uint8_t> write_image(const FlowTableConfig& cfg, std::uint64_t cursor, std::uint64_t now,
                                      const FlowTableStats& stats, const std::string& meta,
                                      std::span<const std::uint32_t> free_list, const FlowEntry* entries,
                                      const std::uint8_t* values, std::size_t size) {
  snapshot::Writer w("flow_table");
  w.put<std::uint32_t>(cfg.capacity);
  w.put<std::uint32_t>(cfg.value_size);
  w.put<std::uint64_t>(cfg.idle_timeout_ns);
  w.put<std::uint64_t>(cfg.close_timeout_ns);
  w.put<std::uint64_t>(cfg.tick_ns);
  w.put<std::uint64_t>(cursor);
  w.put<std::uint64_t>(now);
  w.put(stats);
  const auto slots = live_of(entries, cfg.capacity, size);
  w.reserve(256 + meta.size() + free_list.size_bytes() + cfg.classes.size() * 9 + cfg.class_of_proto.size() +
            slots.size() * (sizeof(std::uint32_t) + sizeof(FlowEntry) + cfg.value_size));
  w.put_array<char>(std::span<const char>(meta.data(), meta.size()));
  w.put_array<std::uint32_t>(free_list);
  w.put_array<std::uint32_t>(slots);
  std::uint8_t* es = w.put_array_space<FlowEntry>(slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i) std::memcpy(es + i * sizeof(FlowEntry), &entries[slots[i]], sizeof(FlowEntry));
  std::uint8_t* vals = w.put_array_space<std::uint8_t>(slots.size() * cfg.value_size);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    std::memcpy(vals + i * cfg.value_size, values + std::size_t{slots[i]} * cfg.value_size, cfg.value_size);
  }
  // Timeout classes (absent in images written before classes existed: restore migrates those).
  std::vector<std::uint64_t> timeouts;
  std::vector<std::uint8_t> on_close;
  for (const auto& c : cfg.classes) {
    timeouts.push_back(c.timeout_ns);
    on_close.push_back(c.on_close);
  }
  w.put_array<std::uint64_t>(timeouts);
  w.put_array<std::uint8_t>(on_close);
  w.put_array<std::uint8_t>(cfg.class_of_proto);
  return w.finish();
}
}  // namespace

std::vector<std::uint8_t> FlowTable::snapshot() const {
  return write_image(cfg_, wheel_.cursor_tick(), now_, stats_, user_meta_, free_, entries_.data(), values_, size_);
}

FlowTable FlowTable::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader rd(image, "flow_table");
  FlowTableConfig c;
  c.capacity = rd.get<std::uint32_t>();
  c.value_size = rd.get<std::uint32_t>();
  c.idle_timeout_ns = rd.get<std::uint64_t>();
  c.close_timeout_ns = rd.get<std::uint64_t>();
  c.tick_ns = rd.get<std::uint64_t>();
  const auto cursor = rd.get<std::uint64_t>();
  const auto now = rd.get<std::uint64_t>();
  const auto st = rd.get<FlowTableStats>();
  const auto meta = rd.get_array<char>(1u << 20);
  if (c.capacity == 0 || c.capacity > kMaxCapacity || c.value_size == 0 || c.value_size > 4096 ||
      c.tick_ns == 0 || c.idle_timeout_ns == 0 || c.close_timeout_ns == 0) {
    throw snapshot::SnapshotError("flow_table snapshot: invalid configuration");
  }
  auto free_list = rd.get_array<std::uint32_t>(c.capacity);
  auto slots = rd.get_array<std::uint32_t>(c.capacity);
  auto es = rd.get_array<FlowEntry>(c.capacity);
  auto vals = rd.get_array<std::uint8_t>();
  const bool has_classes = rd.remaining() > 0;
  if (has_classes) {
    const auto timeouts = rd.get_array<std::uint64_t>(kMaxTimeoutClasses);
    const auto on_close = rd.get_array<std::uint8_t>(kMaxTimeoutClasses);
    const auto by_proto = rd.get_array<std::uint8_t>(256);
    if (timeouts.empty() || on_close.size() != timeouts.size() || by_proto.size() != 256) {
      throw snapshot::SnapshotError("flow_table snapshot: bad timeout classes");
    }
    for (std::size_t i = 0; i < timeouts.size(); ++i) c.classes.push_back(TimeoutClass{timeouts[i], on_close[i]});
    std::copy(by_proto.begin(), by_proto.end(), c.class_of_proto.begin());
  } else {
    // an image from before timeout classes: two classes, closing flows in class 1
    for (auto& e : es) e.tclass = (e.state & FlowEntry::kClosing) ? 1 : 0;
  }
  rd.expect_end();
  if (es.size() != slots.size() || vals.size() != slots.size() * c.value_size ||
      free_list.size() + slots.size() != c.capacity) {
    throw snapshot::SnapshotError("flow_table snapshot: inconsistent entry counts");
  }
  std::optional<FlowTable> made;
  try {
    made.emplace(c);
  } catch (const std::invalid_argument& e) {
    throw snapshot::SnapshotError(std::string("flow_table snapshot: invalid configuration: ") + e.what());
  }
  FlowTable& t = *made;
  std::vector<std::uint8_t> seen(c.capacity, 0);
  for (auto s : free_list) {
    if (s >= c.capacity || seen[s]) throw snapshot::SnapshotError("flow_table snapshot: bad free list");
    seen[s] = 1;
  }
  t.free_ = std::move(free_list);
  t.wheel_.set_cursor_tick(cursor);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const std::uint32_t s = slots[i];
    if (s >= c.capacity || seen[s] || !(es[i].state & FlowEntry::kLive) || es[i].tclass >= t.class_count()) {
      throw snapshot::SnapshotError("flow_table snapshot: bad slot list");
    }
    seen[s] = 1;
    const std::uint64_t h = hash_key(es[i].key);
    if (t.find(es[i].key, h) != kNoSlot) throw snapshot::SnapshotError("flow_table snapshot: duplicate key");
    t.entries_[s] = es[i];
    std::memcpy(t.values_ + std::size_t{s} * c.value_size, vals.data() + i * c.value_size, c.value_size);
    t.index_.insert(h, s);
    t.wheel_.arm(s, t.deadline(s));
  }
  t.size_ = slots.size();
  t.now_ = now;
  t.stats_ = st;
  t.user_meta_.assign(meta.begin(), meta.end());
  return std::move(t);
}

void FlowTable::restore_in_place(std::span<const std::uint8_t> image) {
  FlowTable t = restore(image);  // validates the whole image first: *this is untouched on error
  if (t.cfg_.capacity != cfg_.capacity || t.cfg_.value_size != cfg_.value_size) {
    throw snapshot::SnapshotError("flow_table snapshot: capacity " + std::to_string(t.cfg_.capacity) +
                                  " / value size " + std::to_string(t.cfg_.value_size) +
                                  " differ from this table's " + std::to_string(cfg_.capacity) + " / " +
                                  std::to_string(cfg_.value_size) + " (restore in place needs the same shape)");
  }
  if (t.user_meta_ != user_meta_) {
    throw snapshot::SnapshotError("flow_table snapshot: user metadata (value dtype) '" + t.user_meta_ +
                                  "' differs from this table's '" + user_meta_ + "'");
  }
  std::copy(t.entries_.begin(), t.entries_.end(), entries_.begin());
  std::memcpy(values_, t.values_, std::size_t{cfg_.capacity} * cfg_.value_size);
  cfg_ = t.cfg_;
  timeout_ = t.timeout_;
  free_ = std::move(t.free_);
  index_ = std::move(t.index_);
  wheel_ = std::move(t.wheel_);
  size_ = t.size_;
  now_ = t.now_;
  stats_ = t.stats_;
  mark_all_dirty();
}

// ---------------------------------------------------------------- dirty tracking
void FlowTable::mark_dirty(const std::uint32_t* slots, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) {
    if (slots[j] >= cfg_.capacity) {
      throw std::invalid_argument("slots: " + std::to_string(slots[j]) + " is out of range (capacity " +
                                  std::to_string(cfg_.capacity) + ")");
    }
  }
  for (std::size_t j = 0; j < n; ++j) mark(slots[j]);
}

void FlowTable::mark_all_dirty() noexcept {
  std::fill(dirty_.begin(), dirty_.end(), std::uint8_t{1});
  free_low_ = 0;  // the whole free stack is sent again
}

std::size_t FlowTable::dirty_count() const noexcept {
  return static_cast<std::size_t>(std::count(dirty_.begin(), dirty_.end(), std::uint8_t{1}));
}

void FlowTable::clear_dirty() noexcept {
  std::fill(dirty_.begin(), dirty_.end(), 0);
  free_low_ = free_.size();
  ++delta_seq_;
}

namespace {
void put_config(snapshot::Writer& w, const FlowTableConfig& cfg) {
  w.put<std::uint64_t>(cfg.idle_timeout_ns);
  w.put<std::uint64_t>(cfg.close_timeout_ns);
  w.put<std::uint64_t>(cfg.tick_ns);
  std::vector<std::uint64_t> timeouts;
  std::vector<std::uint8_t> on_close;
  for (const auto& c : cfg.classes) {
    timeouts.push_back(c.timeout_ns);
    on_close.push_back(c.on_close);
  }
  w.put_array<std::uint64_t>(timeouts);
  w.put_array<std::uint8_t>(on_close);
  w.put_array<std::uint8_t>(cfg.class_of_proto);
}

// Delta payload: capacity | value size | first interval | intervals covered | cursor tick | now |
// stats | user meta | idle / close / tick | timeout classes | free-stack depth kept | free-stack top
// above it | dirty slots | their entries | their values. A table's own delta covers one interval;
// an image's (FlowTableImage::take_delta) covers every delta applied to it since its previous one.
std::vector<std::uint8_t> write_delta(const FlowTableConfig& cfg, std::uint64_t seq, std::uint64_t intervals,
                                      std::uint64_t cursor, std::uint64_t now, const FlowTableStats& st,
                                      const std::string& meta, const std::vector<std::uint32_t>& free,
                                      std::size_t free_low, const std::vector<std::uint8_t>& dirty,
                                      const FlowEntry* entries, const std::uint8_t* values) {
  std::vector<std::uint32_t> slots;
  const std::size_t cap = dirty.size();
  std::size_t s = 0;
  for (; s + 8 <= cap; s += 8) {  // eight flags at a time: most words are clean
    std::uint64_t word;
    std::memcpy(&word, dirty.data() + s, sizeof word);
    if (word == 0) continue;
    for (std::size_t k = 0; k < 8; ++k) {
      if (dirty[s + k]) slots.push_back(static_cast<std::uint32_t>(s + k));
    }
  }
  for (; s < cap; ++s) {
    if (dirty[s]) slots.push_back(static_cast<std::uint32_t>(s));
  }
  const std::size_t vs = cfg.value_size;
  const std::size_t keep = std::min(free_low, free.size());
  snapshot::Writer w("flow_table_delta");
  // one buffer sized up front, the dirty entries and values gathered straight into it: an
  // all-dirty delta of a large table is then one copy of each slot and no reallocation
  w.reserve(256 + meta.size() + cfg.classes.size() * 9 + cfg.class_of_proto.size() +
            (free.size() - keep) * sizeof(std::uint32_t) +
            slots.size() * (sizeof(std::uint32_t) + sizeof(FlowEntry) + vs));
  w.put<std::uint32_t>(cfg.capacity);
  w.put<std::uint32_t>(cfg.value_size);
  w.put<std::uint64_t>(seq);
  w.put<std::uint64_t>(intervals);
  w.put<std::uint64_t>(cursor);
  w.put<std::uint64_t>(now);
  w.put(st);
  w.put_array<char>(std::span<const char>(meta.data(), meta.size()));
  put_config(w, cfg);
  w.put<std::uint64_t>(keep);
  w.put_array<std::uint32_t>(std::span<const std::uint32_t>(free.data() + keep, free.size() - keep));
  w.put_array<std::uint32_t>(slots);
  // The dirty slots are scattered over the table: each copy would wait for its cache lines in
  // turn, so the lines a few slots ahead are asked for first.
  constexpr std::size_t kAhead = 12;
  const std::size_t n = slots.size();
  std::uint8_t* es = w.put_array_space<FlowEntry>(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (i + kAhead < n) __builtin_prefetch(&entries[slots[i + kAhead]]);
    std::memcpy(es + i * sizeof(FlowEntry), &entries[slots[i]], sizeof(FlowEntry));
  }
  std::uint8_t* vals = w.put_array_space<std::uint8_t>(n * vs);
  for (std::size_t i = 0; i < n; ++i) {
    if (i + kAhead < n) {
      const std::uint8_t* ahead = values + std::size_t{slots[i + kAhead]} * vs;
      __builtin_prefetch(ahead);
      if (vs > 64) __builtin_prefetch(ahead + vs - 1);
    }
    std::memcpy(vals + i * vs, values + std::size_t{slots[i]} * vs, vs);
  }
  return w.finish();
}
}  // namespace

std::vector<std::uint8_t> FlowTable::take_delta() {
  auto out = write_delta(cfg_, delta_seq_, 1, wheel_.cursor_tick(), now_, stats_, user_meta_, free_, free_low_, dirty_,
                         entries_.data(), values_);
  clear_dirty();
  return out;
}

// ---------------------------------------------------------------- FlowTableImage
FlowTableImage::FlowTableImage(std::span<const std::uint8_t> image) {
  FlowTable t = FlowTable::restore(image);  // validates the image
  cfg_ = t.cfg_;
  cursor_ = t.wheel_.cursor_tick();
  now_ = t.now_;
  stats_ = t.stats_;
  user_meta_ = t.user_meta_;
  free_ = t.free_;
  entries_.assign(t.entries_.begin(), t.entries_.end());
  values_.assign(t.values_, t.values_ + std::size_t{cfg_.capacity} * cfg_.value_size);
  size_ = t.size_;
  dirty_.assign(cfg_.capacity, 0);
  free_low_ = free_.size();
}

void FlowTableImage::apply(std::span<const std::uint8_t> delta) {
  snapshot::Reader rd(delta, "flow_table_delta");
  const auto capacity = rd.get<std::uint32_t>();
  const auto value_size = rd.get<std::uint32_t>();
  if (capacity != cfg_.capacity || value_size != cfg_.value_size) {
    throw snapshot::SnapshotError("flow_table delta: capacity " + std::to_string(capacity) + " / value size " +
                                  std::to_string(value_size) + " differ from the image's " +
                                  std::to_string(cfg_.capacity) + " / " + std::to_string(cfg_.value_size));
  }
  const auto seq = rd.get<std::uint64_t>();
  const auto intervals = rd.get<std::uint64_t>();
  if (intervals > (std::uint64_t{1} << 62) || seq > (std::uint64_t{1} << 62)) {
    throw snapshot::SnapshotError("flow_table delta: interval numbers out of range");
  }
  if (seq_known_ && seq != seq_) {
    throw snapshot::SnapshotError("flow_table delta: interval " + std::to_string(seq) + " does not follow " +
                                  std::to_string(seq_) + " (a delta was lost or applied twice)");
  }
  const auto cursor = rd.get<std::uint64_t>();
  const auto now = rd.get<std::uint64_t>();
  const auto st = rd.get<FlowTableStats>();
  const auto meta = rd.get_array<char>(1u << 20);
  FlowTableConfig c = cfg_;
  c.idle_timeout_ns = rd.get<std::uint64_t>();
  c.close_timeout_ns = rd.get<std::uint64_t>();
  c.tick_ns = rd.get<std::uint64_t>();
  const auto timeouts = rd.get_array<std::uint64_t>(kMaxTimeoutClasses);
  const auto on_close = rd.get_array<std::uint8_t>(kMaxTimeoutClasses);
  const auto by_proto = rd.get_array<std::uint8_t>(256);
  if (timeouts.empty() || on_close.size() != timeouts.size() || by_proto.size() != 256) {
    throw snapshot::SnapshotError("flow_table delta: bad timeout classes");
  }
  c.classes.clear();
  for (std::size_t i = 0; i < timeouts.size(); ++i) c.classes.push_back(TimeoutClass{timeouts[i], on_close[i]});
  std::copy(by_proto.begin(), by_proto.end(), c.class_of_proto.begin());
  const auto keep = rd.get<std::uint64_t>();
  const auto top = rd.get_array<std::uint32_t>(capacity);
  const auto slots = rd.get_array<std::uint32_t>(capacity);
  const auto es = rd.get_array<FlowEntry>(capacity);
  const auto vals = rd.get_array<std::uint8_t>();
  rd.expect_end();
  if (keep > free_.size() || keep + top.size() > capacity || es.size() != slots.size() ||
      vals.size() != slots.size() * value_size) {
    throw snapshot::SnapshotError("flow_table delta: inconsistent counts");
  }
  for (auto s : top) {
    if (s >= capacity) throw snapshot::SnapshotError("flow_table delta: bad free list");
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] >= capacity || (i && slots[i] <= slots[i - 1])) {
      throw snapshot::SnapshotError("flow_table delta: bad slot list");
    }
  }
  // validated: apply
  for (std::size_t i = 0; i < slots.size(); ++i) {
    entries_[slots[i]] = es[i];
    std::memcpy(values_.data() + std::size_t{slots[i]} * value_size, vals.data() + i * value_size, value_size);
    dirty_[slots[i]] = 1;
  }
  if (!pending_) span_seq_ = seq;
  pending_ += intervals;
  free_low_ = std::min<std::size_t>(free_low_, keep);
  free_.resize(keep);
  free_.insert(free_.end(), top.begin(), top.end());
  size_ = capacity - free_.size();
  cfg_ = std::move(c);
  cursor_ = cursor;
  now_ = now;
  stats_ = st;
  user_meta_.assign(meta.begin(), meta.end());
  seq_ = seq + intervals;
  seq_known_ = true;
}

std::vector<std::uint8_t> FlowTableImage::take_delta() {
  if (!pending_) throw std::logic_error("flow_table image: no delta applied since the image was built or its last take_delta()");
  auto out = write_delta(cfg_, span_seq_, pending_, cursor_, now_, stats_, user_meta_, free_, free_low_, dirty_,
                         entries_.data(), values_.data());
  clear_delta();
  return out;
}

void FlowTableImage::clear_delta() noexcept {
  std::fill(dirty_.begin(), dirty_.end(), std::uint8_t{0});
  free_low_ = free_.size();
  pending_ = 0;
}

std::vector<std::uint8_t> FlowTableImage::snapshot() const {
  return write_image(cfg_, cursor_, now_, stats_, user_meta_, free_, entries_.data(), values_.data(), size_);
}

}  // namespace vnfkit::flow
