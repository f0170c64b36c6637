// FlowTable: per-flow state records for stateful VNFs.
//
// Each live flow owns a *slot* in [0, capacity): a 64-byte FlowEntry (key, flow ID, last packet
// time, state) and a fixed-size value record chosen by the VNF (value_size bytes, opaque to the
// engine, zeroed on insert). Slots are stable while the entry lives, so a VNF can keep more per-flow
// state in side arrays indexed by slot. Free slots are reused LIFO (deterministic).
//
// Index: KeyIndex (64-byte buckets, 10 ways of 16-bit signatures). Batch calls run a three-stage
// software pipeline: hash a key and prefetch its home bucket, read the bucket and prefetch the
// record of the first signature match, then confirm by the full key and probe/insert in packet
// order (so a flow that appears twice in one batch is inserted once). A pure lookup whose bucket
// holds no matching signature and no overflow is decided without touching a record.
//
// Expiry: every flow belongs to a *timeout class* (up to kMaxTimeoutClasses, e.g. "tcp" 24 h,
// "tcp_closing" 240 s, "udp" 300 s, "icmp" 60 s) and its deadline is last_ts + that class's
// timeout (kNever: the class never expires). A new flow's class is the caller's choice per packet,
// or by IP protocol (class_of_proto); a TCP packet with FIN or RST moves its flow to the class's
// on_close class (and marks it closing); set_class() moves flows explicitly. Without explicit
// classes the table has two, from idle_timeout_ns / close_timeout_ns: 0 = idle_timeout (closes into
// 1), 1 = min(idle, close). expire(now) removes every flow whose deadline <= now, driven by a
// TimerWheel on packet timestamps, and reports them ordered by (deadline, key bytes):
// deterministic, and what a reference model can predict. A flow touched after its deadline but
// before expire() ran is *stale*: lookup_or_insert and touch can report that per packet (the
// flow's first packet of the call decides; it refreshes the flow as usual).
//
// When full (no free slot): the insert fails, the packet's slot is kNoSlot, is_new is 0 and
// stats().failed_inserts counts it. Nothing is evicted.
//
// Dirty tracking (incremental checkpoints): the table keeps one dirty flag per slot, set for every
// slot whose entry it changes and for every slot it hands to the caller (lookup hits, lookup_or_insert,
// touch, set_class, live_slots, active_in_range), since the caller may then write that slot's value
// record through the values view; mark_dirty() marks slots the caller writes by a slot number kept
// from earlier. take_delta() returns what changed since the previous take_delta() (the dirty slots'
// entries and values, the changed top of the free stack, the clock and counters) and starts a new
// interval; a FlowTableImage built from a snapshot() and fed every later delta in order
// snapshots to exactly the bytes the table itself would, so the work at a checkpoint is
// proportional to what changed, not to the table.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/flow/flow_key.hpp"
#include "vnfkit/flow/hash.hpp"
#include "vnfkit/flow/timer_wheel.hpp"

namespace vnfkit::flow {

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpRst = 0x04;

struct alignas(64) FlowEntry {
  FlowKey key;
  std::uint64_t last_ts = 0;   // newest packet timestamp seen (ns)
  std::uint32_t flow_id = 0;
  std::uint8_t state = 0;      // kLive | kClosing
  std::uint8_t tclass = 0;     // timeout class
  std::uint8_t pad[10] = {};
  static constexpr std::uint8_t kLive = 1;
  static constexpr std::uint8_t kClosing = 2;
};
static_assert(sizeof(FlowEntry) == 64);

inline constexpr std::size_t kMaxTimeoutClasses = 64;
inline constexpr std::uint8_t kSameClass = 0xFF;  // on_close: a FIN/RST leaves the class as it is

struct TimeoutClass {
  std::uint64_t timeout_ns = kNever;   // idle timeout of a flow in this class (kNever: never expires)
  std::uint8_t on_close = kSameClass;  // class entered when a TCP FIN or RST is seen
};

struct FlowTableConfig {
  std::uint32_t capacity = 1024;
  std::uint32_t value_size = 8;
  std::uint64_t idle_timeout_ns = kNever;   // used only when `classes` is empty
  std::uint64_t close_timeout_ns = kNever;  // used only when `classes` is empty
  std::uint64_t tick_ns = 0;  // 0 = automatic
  // Timeout classes (at most kMaxTimeoutClasses); empty = the two classes from the timeouts above.
  std::vector<TimeoutClass> classes;
  // Class of a new flow whose caller names none, by IP protocol number.
  std::array<std::uint8_t, 256> class_of_proto{};
};

struct FlowTableStats {
  std::uint64_t lookups = 0;
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t inserts = 0;
  std::uint64_t failed_inserts = 0;
  std::uint64_t removals = 0;
  std::uint64_t expired_idle = 0;
  std::uint64_t expired_closed = 0;
};

enum class ExpireReason : std::uint8_t { kIdle = 1, kClosed = 2 };

// What expire() hands back, one entry per expired flow, in expiry order.
struct Expired {
  std::vector<std::uint32_t> slots;
  std::vector<FlowEntry> entries;
  std::vector<std::uint64_t> deadlines;
  std::vector<std::uint8_t> reasons;
  std::vector<std::uint8_t> values;  // slots.size() * value_size bytes
  // (each entry's timeout class is entries[i].tclass)
  void clear() {
    slots.clear();
    entries.clear();
    deadlines.clear();
    reasons.clear();
    values.clear();
  }
};

class FlowTableImage;

class FlowTable {
 public:
  explicit FlowTable(const FlowTableConfig& cfg);

  [[nodiscard]] const FlowTableConfig& config() const noexcept { return cfg_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return cfg_.capacity; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] const FlowTableStats& stats() const noexcept { return stats_; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept;
  [[nodiscard]] std::uint64_t now_ns() const noexcept { return now_; }  // newest expire() time

  [[nodiscard]] FlowEntry* entries() noexcept { return entries_.data(); }
  [[nodiscard]] const FlowEntry* entries() const noexcept { return entries_.data(); }
  [[nodiscard]] std::uint8_t* values() noexcept { return values_; }
  [[nodiscard]] bool live(std::uint32_t slot) const noexcept {
    return slot < cfg_.capacity && (entries_[slot].state & FlowEntry::kLive);
  }
  [[nodiscard]] std::uint64_t deadline(std::uint32_t slot) const noexcept;
  [[nodiscard]] std::size_t class_count() const noexcept { return cfg_.classes.size(); }

  // Pure lookup: slots[i] = slot of keys[i] or kNoSlot. Touches nothing but the counters.
  void lookup(const FlowKey* keys, std::size_t n, std::uint32_t* slots) noexcept;
  // Lookup, inserting missing flows; refreshes last_ts, notes FIN/RST (tcp_flags may be null),
  // (re)arms expiry. is_new may be null. classes (may be null: by protocol) gives each packet's
  // class for a flow it creates. stale (may be null): 1 where the packet found its flow past its
  // deadline (not yet expired). Returns the number of new flows. Throws std::invalid_argument
  // (before touching anything) for a class >= class_count().
  std::size_t lookup_or_insert(const FlowKey* keys, const std::uint32_t* flow_ids,
                               const std::uint64_t* ts_ns, const std::uint8_t* tcp_flags, std::size_t n,
                               std::uint32_t* slots, std::uint8_t* is_new, const std::uint8_t* classes = nullptr,
                               std::uint8_t* stale = nullptr);
  // The same two calls over selected rows of per-packet columns (n_rows rows each: keys, and for
  // lookup_or_insert flow_ids, ts_ns, tcp_flags, classes): call j uses row rows[j], outputs have n
  // entries (slots[j], is_new[j], stale[j]). Saves the caller a gather of the keys. Throws
  // std::invalid_argument (before touching anything) if a row is >= n_rows.
  void lookup_rows(const FlowKey* keys, std::size_t n_rows, const std::uint32_t* rows, std::size_t n,
                   std::uint32_t* slots);
  std::size_t lookup_or_insert_rows(const FlowKey* keys, const std::uint32_t* flow_ids, const std::uint64_t* ts_ns,
                                    const std::uint8_t* tcp_flags, std::size_t n_rows, const std::uint32_t* rows,
                                    std::size_t n, std::uint32_t* slots, std::uint8_t* is_new,
                                    const std::uint8_t* classes = nullptr, std::uint8_t* stale = nullptr);
  // Refreshes live flows by slot, as a packet of theirs would (e.g. a reply found through another
  // table): touch j uses slot slots[j] and the time / TCP flags of row rows[j] (rows may be null:
  // row j) of ts_ns / tcp_flags (n_rows rows; tcp_flags may be null). stale[j] (may be null) = 1
  // where the flow was past its deadline at that packet. Returns the number of stale touches.
  // Throws std::invalid_argument (before touching anything) for a slot that is not live or a row
  // >= n_rows.
  std::size_t touch(const std::uint32_t* slots, std::size_t n, const std::uint64_t* ts_ns,
                    const std::uint8_t* tcp_flags, const std::uint32_t* rows, std::size_t n_rows,
                    std::uint8_t* stale);
  // Moves live flows to class cls (re-arming their timers). Throws std::invalid_argument (before
  // changing anything) for a slot that is not live or a class >= class_count().
  void set_class(const std::uint32_t* slots, std::size_t n, std::uint8_t cls);
  // Removes keys; removed[i] (may be null) = 1 if key i was live. Returns the count.
  std::size_t remove(const FlowKey* keys, std::size_t n, std::uint8_t* removed) noexcept;
  bool remove_slot(std::uint32_t slot) noexcept;
  // Expires every flow with deadline <= now_ns into out (cleared first). Returns the count.
  std::size_t expire(std::uint64_t now_ns, Expired& out);
  // Slots of live flows with lo <= flow_id <= hi and last_ts >= since_ns, ascending.
  [[nodiscard]] std::vector<std::uint32_t> active_in_range(std::uint32_t lo, std::uint32_t hi,
                                                           std::uint64_t since_ns = 0) const;
  // Slots of all live flows, ascending (marked dirty unless mark is false: a reader that writes
  // no value record, such as a snapshot of the VNF's own state, need not send them all again).
  [[nodiscard]] std::vector<std::uint32_t> live_slots(bool mark = true) const;
  void clear();

  // Opaque user metadata stored in snapshots (the Python layer keeps the value dtype there).
  void set_user_meta(std::string meta) { user_meta_ = std::move(meta); }
  [[nodiscard]] const std::string& user_meta() const noexcept { return user_meta_; }

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  static FlowTable restore(std::span<const std::uint8_t> image);

  // Dirty tracking (see the file comment). Throws std::invalid_argument (before marking anything)
  // for a slot >= capacity.
  void mark_dirty(const std::uint32_t* slots, std::size_t n);
  void mark_all_dirty() noexcept;
  // mark_dirty() of one slot the caller has checked is < capacity (native hot paths).
  void mark_dirty_unchecked(std::uint32_t slot) noexcept { mark(slot); }
  [[nodiscard]] std::size_t dirty_count() const noexcept;
  // What changed since the previous take_delta() / clear_dirty(); starts a new interval.
  [[nodiscard]] std::vector<std::uint8_t> take_delta();
  void clear_dirty() noexcept;
  // Replaces this table's contents with `image` without moving its entry and value arrays, so
  // pointers and views into them stay valid and see the restored records. The image must have
  // this table's capacity, value size and user metadata (the Python layer's value dtype); on any
  // error (SnapshotError) the table is unchanged.
  void restore_in_place(std::span<const std::uint8_t> image);

  FlowTable(FlowTable&&) noexcept;
  FlowTable& operator=(FlowTable&&) noexcept;
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;
  ~FlowTable();

 private:
  friend class FlowTableImage;
  [[nodiscard]] std::uint32_t find(const FlowKey& k, std::uint64_t h) const noexcept {
    return index_.find(k, h, [this](std::uint32_t s) -> const FlowKey& { return entries_[s].key; });
  }
  void free_slot(std::uint32_t slot) noexcept;
  void mark(std::uint32_t s) const noexcept { dirty_[s] = 1; }  // a plain store: no read on the hot path
  // Marks the slots a batch call resolved (kNoSlot entries skipped), in one pass after the
  // pipeline so the byte stores do not make the compiler reload table state inside it.
  void mark_found(const std::uint32_t* slots, std::size_t n) const noexcept {
    std::uint8_t* d = dirty_.data();
    const std::uint32_t cap = cfg_.capacity;
    for (std::size_t i = 0; i < n; ++i) {
      if (slots[i] < cap) d[slots[i]] = 1;
    }
  }
  void note_free_pop() noexcept {
    if (free_.size() < free_low_) free_low_ = free_.size();
  }
  template <typename KeyAt, typename Resolve>
  void pipeline(KeyAt&& key_at, std::size_t n, Resolve&& resolve) noexcept;
  template <typename Row>
  void lookup_impl(const FlowKey* keys, Row row, std::size_t n, std::uint32_t* slots) noexcept;
  template <typename Row>
  std::size_t lookup_or_insert_impl(const FlowKey* keys, const std::uint32_t* flow_ids, const std::uint64_t* ts_ns,
                                    const std::uint8_t* tcp_flags, const std::uint8_t* classes, Row row,
                                    std::size_t n, std::uint32_t* slots, std::uint8_t* is_new,
                                    std::uint8_t* stale) noexcept;
  void check_classes(const std::uint8_t* classes, const std::uint32_t* rows, std::size_t n) const;
  // FIN/RST on live slot s: mark closing, move to the on_close class, re-arm if the class changed.
  void close(std::uint32_t s) noexcept;
  [[nodiscard]] std::uint64_t deadline_of(const FlowEntry& e) const noexcept {
    return e.last_ts > kNever - timeout_[e.tclass] ? kNever : e.last_ts + timeout_[e.tclass];
  }

  FlowTableConfig cfg_;
  std::array<std::uint64_t, kMaxTimeoutClasses> timeout_{};  // cfg_.classes[c].timeout_ns
  std::vector<FlowEntry, TableAllocator<FlowEntry>> entries_;
  std::uint8_t* values_ = nullptr;  // 64-byte aligned, capacity * value_size bytes
  std::vector<std::uint32_t> free_;  // stack of free slots (back = next to use)
  KeyIndex index_;
  TimerWheel wheel_;
  std::size_t size_ = 0;
  std::uint64_t now_ = 0;
  FlowTableStats stats_;
  std::string user_meta_;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> due_;  // scratch for expire()
  mutable std::vector<std::uint8_t> dirty_;  // one byte per slot, 1 = dirty (see dirty tracking)
  std::size_t free_low_ = 0;  // lowest free-stack depth since the interval began
  std::uint64_t delta_seq_ = 0;  // intervals ended (take_delta / clear_dirty calls)
};

// The image of a FlowTable kept outside it (e.g. by a checkpointer in another process) and brought
// up to date by the table's take_delta() output: no index or timer wheel, only what a snapshot
// holds. Built from a snapshot(); apply() each later delta in order; snapshot() then equals the
// table's own snapshot() byte for byte. Throws SnapshotError for a bad image or delta (a delta
// of another shape, or one that does not follow the previous: the image is then unchanged).
class FlowTableImage {
 public:
  explicit FlowTableImage(std::span<const std::uint8_t> image);
  void apply(std::span<const std::uint8_t> delta);
  [[nodiscard]] std::vector<std::uint8_t> snapshot() const;
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint64_t deltas() const noexcept { return seq_; }
  // One delta equal to every delta applied since the image was built or since the previous
  // take_delta() / clear_delta(), applied in order (what changed in those intervals, as of the
  // last); an image of the table fed these instead of the table's own deltas stays the same.
  // std::logic_error if none was applied.
  [[nodiscard]] std::vector<std::uint8_t> take_delta();
  // Start a new span of deltas without taking one.
  void clear_delta() noexcept;
  // Table intervals the deltas applied since the last take_delta() / clear_delta() cover.
  [[nodiscard]] std::uint64_t pending_intervals() const noexcept { return pending_; }

 private:
  FlowTableConfig cfg_;
  std::uint64_t cursor_ = 0;
  std::uint64_t now_ = 0;
  FlowTableStats stats_;
  std::string user_meta_;
  std::vector<std::uint32_t> free_;
  std::vector<FlowEntry> entries_;
  std::vector<std::uint8_t> values_;
  std::size_t size_ = 0;
  std::uint64_t seq_ = 0;  // the table's interval count after the last delta applied
  bool seq_known_ = false;  // false until the first delta (a snapshot does not carry it)
  std::vector<std::uint8_t> dirty_;  // slots a delta applied since the last take_delta / clear_delta
  std::size_t free_low_ = 0;  // lowest free-stack depth kept by those deltas
  std::uint64_t span_seq_ = 0;  // first interval of those deltas
  std::uint64_t pending_ = 0;  // intervals they cover
};

}  // namespace vnfkit::flow
