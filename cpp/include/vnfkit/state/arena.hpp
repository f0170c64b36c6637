// The memory that shared aggregate state and determinant logs live in.
//
// Two backends behind one interface:
//   * heap  (the default): every object gets its own zeroed, 64-byte aligned heap block; the
//     directory is a vector in this process. Shared by the threads of one process.
//   * shm: one POSIX shared-memory segment (/dev/shm/vnfkit-...), created by one process and
//     attached by others (or inherited across fork()). The segment starts with a header holding
//     the directory of declared objects (name, kind, offset, size) and one log slot per worker
//     index; objects are carved from the segment with a bump allocator and never freed (memory is
//     committed as objects and logs are declared, not when the segment is made). The
//     creator unlinks the segment when it closes (or is destroyed); mappings stay valid in every
//     process until its last user drops them.
// Object ids are directory indices, identical in every attached process; they are the variable
// ids stored in determinants.
//
// Declarations (lock()/add_object()/publish) are serialised by a small spin lock in the header
// (a CAS on a word holding the holder's pid; a holder that died is detected with kill(pid, 0) and
// its lock taken over). The lock is never taken on the access path: objects use lock-free atomics
// directly on the mapped memory, which works across processes because those atomics are
// lock-free and therefore address-free (checked by a static_assert in arena.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vnfkit/ftlog/log.hpp"

namespace vnfkit::state {

enum class Kind : std::uint8_t { kCounters = 1, kTokenBuckets = 2, kPortPool = 3, kRegisters = 4, kBuffer = 5 };
const char* kind_name(Kind k) noexcept;

struct ShmLimits {
  std::size_t max_objects = 256;        // directory entries
  std::size_t max_workers = 64;         // determinant-log slots (worker indices 0..max_workers-1)
  std::size_t log_records = 1u << 18;   // capacity of each worker's log, in 24-byte records

  [[nodiscard]] ShmLimits validated() const;
};

class Arena {
 public:
  static constexpr std::size_t kNameMax = 200;
  static constexpr std::size_t kAlign = 64;

  struct Entry {
    std::string name;
    Kind kind;
    void* mem;
    std::size_t bytes;
  };

  // Heap arena (process-local).
  static std::shared_ptr<Arena> heap();
  // Create segment `name` ("vnfkit-..." : letters, digits, '.', '_', '-') of `bytes` bytes.
  // Throws std::invalid_argument if it exists or the arguments are bad, std::system_error otherwise.
  static std::shared_ptr<Arena> create_shm(const std::string& name, std::size_t bytes, const ShmLimits& limits);
  // Attach an existing segment made by create_shm (std::invalid_argument if absent or not an arena).
  static std::shared_ptr<Arena> attach_shm(const std::string& name);
  static void check_name(const std::string& name);

  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  [[nodiscard]] bool is_shm() const noexcept { return base_ != nullptr; }
  [[nodiscard]] const std::string& shm_name() const noexcept { return name_; }
  // True in the process that created the segment (the one that unlinks it).
  [[nodiscard]] bool is_owner() const noexcept;
  [[nodiscard]] std::size_t capacity_bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::size_t used_bytes() const noexcept;
  [[nodiscard]] std::size_t max_objects() const noexcept;
  [[nodiscard]] std::size_t max_workers() const noexcept;
  // Remove the segment name (idempotent; mappings stay valid). Only the owner process unlinks.
  void unlink() noexcept;

  // ---- declarations: call with the lock held ----
  class Guard {
   public:
    explicit Guard(Arena& a);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    Arena& a_;
  };
  [[nodiscard]] std::size_t count() const noexcept;   // published objects
  [[nodiscard]] Entry entry(std::size_t id) const;
  // Zeroed, kAlign-aligned storage for object count() (published by publish() once formatted).
  void* allocate(const std::string& name, Kind kind, std::size_t bytes);
  void publish() noexcept;

  // Log slot of worker `thread` (shm only; nullptr for a heap arena): created on first use.
  ftlog::LogShared* log_slot(std::uint16_t thread, bool create);

 private:
  struct Header;
  Arena() = default;
  void lock();
  void unlock() noexcept;
  Header* hdr() const noexcept;
  void* bump(std::size_t bytes);

  // shm backend
  std::uint8_t* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::string name_;
  int creator_pid_ = 0;   // pid that created the segment in this process image (0: attached)
  bool unlinked_ = false;
  // heap backend
  std::mutex heap_mu_;
  struct HeapBlock {
    std::string name;
    Kind kind;
    void* mem;
    std::size_t bytes;
  };
  std::vector<HeapBlock> heap_;
  std::size_t heap_published_ = 0;
  std::size_t heap_bytes_ = 0;
};

}  // namespace vnfkit::state
