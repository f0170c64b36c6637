// Misuse guard for bridge objects that are "one per worker thread" (FlowTable, Context) or must not
// be mutated while another thread reads them (PacketBatch). RangeTable and ExceptionTable need no
// guard: they are published as immutable versions (vnfkit/flow/published.hpp).
//
// The bridge releases the GIL around engine loops, so two Python threads calling into the SAME
// object really run concurrently, and the engine objects are not thread-safe: that corrupts the
// heap. A UseGuard marks the object "in use" for the duration of one bridge call (taken with the
// GIL held, before the engine call, released after the GIL is re-acquired) and raises
// RuntimeError("<Type>: used from two threads at once; <rule>") instead of proceeding when a
// conflicting call is already in flight. Exclusive uses conflict with everything; shared uses
// (read-only engine calls such as PacketBatch.verify_checksums) only with exclusive ones.
//
// The engine classes are bound directly (no wrapper object to hold a flag), so the "in use" marks
// live in a small process-wide table of busy object addresses, sharded by address: taking and
// dropping a mark is one uncontended mutex lock/unlock (an atomic CAS + store) on the object's
// shard and a scan of that shard's (normally empty) busy list. Cost: tens of ns per batch call,
// never per packet. A mark exists only while a call is in flight, so no entry outlives an object.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace vnfkit::bridge {

class UseRegistry {
 public:
  enum class Mode { kShared, kExclusive };

  // Marks obj in use; returns false (and marks nothing) on a conflicting use in flight.
  bool acquire(const void* obj, Mode mode) noexcept {
    Shard& s = shard(obj);
    std::lock_guard lock(s.mu);
    for (Entry& e : s.busy) {
      if (e.obj != obj) continue;
      if (mode == Mode::kExclusive || e.users < 0) return false;
      ++e.users;
      return true;
    }
    try {
      s.busy.push_back(Entry{obj, mode == Mode::kExclusive ? -1 : 1});
    } catch (...) {  // out of memory: refuse rather than run unguarded
      return false;
    }
    return true;
  }

  void release(const void* obj) noexcept {
    Shard& s = shard(obj);
    std::lock_guard lock(s.mu);
    for (std::size_t i = 0; i < s.busy.size(); ++i) {
      Entry& e = s.busy[i];
      if (e.obj != obj) continue;
      if (e.users > 1) {
        --e.users;
      } else {
        e = s.busy.back();
        s.busy.pop_back();
      }
      return;
    }
  }

  static UseRegistry& instance() {
    static UseRegistry* r = new UseRegistry();  // never destroyed: usable during interpreter teardown
    return *r;
  }

 private:
  struct Entry {
    const void* obj;
    int users;  // -1: one exclusive user; n > 0: n shared users
  };
  struct alignas(64) Shard {
    std::mutex mu;
    std::vector<Entry> busy;
  };
  static constexpr std::size_t kShards = 64;

  Shard& shard(const void* obj) noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(obj);
    return shards_[static_cast<std::size_t>((a >> 4) * 0x9E3779B97F4A7C15ull >> 58) % kShards];
  }

  std::array<Shard, kShards> shards_{};
};

// RAII mark for one bridge call. Construct it with the GIL held BEFORE py::gil_scoped_release (so it
// is dropped after the GIL is re-acquired); it throws std::runtime_error (Python RuntimeError).
class UseGuard {
 public:
  using Mode = UseRegistry::Mode;

  UseGuard(const void* obj, const char* type, const char* rule, Mode mode = Mode::kExclusive) : obj_(obj) {
    if (!UseRegistry::instance().acquire(obj, mode)) {
      throw std::runtime_error(std::string(type) + ": used from two threads at once; " + rule);
    }
  }
  ~UseGuard() { UseRegistry::instance().release(obj_); }
  UseGuard(const UseGuard&) = delete;
  UseGuard& operator=(const UseGuard&) = delete;

 private:
  const void* obj_;
};

// The rules named in the errors (and in the docstrings).
inline constexpr const char* kFlowTableRule = "use one table per worker thread";
inline constexpr const char* kContextRule = "use one context per worker thread (state.context(thread))";
inline constexpr const char* kBatchRule =
    "a batch must not be modified (parse, fix_checksums, rewrite_*, classify, split_gateway) while another "
    "thread uses it; use one batch per worker thread";

inline UseGuard flow_table_use(const void* t) { return UseGuard(t, "FlowTable", kFlowTableRule); }
inline UseGuard context_use(const void* c) { return UseGuard(c, "Context", kContextRule); }
inline UseGuard batch_write(const void* b) { return UseGuard(b, "PacketBatch", kBatchRule); }
inline UseGuard batch_read(const void* b) {
  return UseGuard(b, "PacketBatch", kBatchRule, UseGuard::Mode::kShared);
}

}  // namespace vnfkit::bridge
