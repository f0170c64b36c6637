#include "vnfkit/state/arena.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace vnfkit::state {

// Shared-state atomics are used on memory mapped by several processes: that is only well defined
// for atomics that are lock-free (hence address-free, [atomics.lockfree]).
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free (address-free)");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "32-bit atomics must be lock-free (address-free)");
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "64-bit atomics must be lock-free (address-free)");
static_assert(std::atomic<std::int32_t>::is_always_lock_free, "32-bit atomics must be lock-free (address-free)");

const char* kind_name(Kind k) noexcept {
  switch (k) {
    case Kind::kCounters: return "counters";
    case Kind::kTokenBuckets: return "token_buckets";
    case Kind::kPortPool: return "port_pool";
    case Kind::kRegisters: return "registers";
    case Kind::kBuffer: return "buffer";
  }
  return "unknown";
}

ShmLimits ShmLimits::validated() const {
  if (max_objects < 1 || max_objects > 0xFFFE) throw std::invalid_argument("max_objects: must be in [1, 65534]");
  if (max_workers < 1 || max_workers > 1024) throw std::invalid_argument("max_workers: must be in [1, 1024]");
  if (log_records < 64 || log_records > (1ull << 32)) throw std::invalid_argument("log_records: must be in [64, 2^32]");
  return *this;
}

namespace {
constexpr std::uint64_t kMagic = 0x41524E454B464E56ull;  // "VNFKENRA"
constexpr std::uint32_t kVersion = 1;

std::size_t round_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }

struct DirEntry {
  char name[224];
  std::uint64_t offset;
  std::uint64_t bytes;
  std::uint32_t kind;
  std::uint32_t reserved;
  std::uint64_t pad;
};
static_assert(sizeof(DirEntry) == 256);

bool alive(std::int32_t pid) noexcept { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }
}  // namespace

struct Arena::Header {
  std::atomic<std::uint64_t> magic;  // written last by the creator (release)
  std::uint32_t version;
  std::uint32_t header_bytes;
  std::uint64_t total_bytes;
  std::uint32_t max_objects;
  std::uint32_t max_workers;
  std::uint64_t log_records;
  std::int32_t creator_pid;
  std::atomic<std::int32_t> lock_pid;  // declaration lock: 0 = free, else the holder's pid
  std::atomic<std::uint64_t> bump;     // next free offset
  std::atomic<std::uint32_t> objects;  // published directory entries
  std::uint32_t pad0;
  std::uint8_t pad1[64];

  DirEntry* dir() noexcept { return reinterpret_cast<DirEntry*>(reinterpret_cast<std::uint8_t*>(this) + 128); }
  std::atomic<std::uint64_t>* logs() noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(dir() + max_objects);
  }
  static std::size_t bytes_for(const ShmLimits& l) noexcept {
    return round_up(128 + l.max_objects * sizeof(DirEntry) + l.max_workers * 8, kAlign);
  }
};

void Arena::check_name(const std::string& name) {
  if (name.size() < 8 || name.size() > 200 || name.rfind("vnfkit-", 0) != 0) {
    throw std::invalid_argument("name: a shared-memory state name must start with 'vnfkit-' and have 8-200 characters, got '" +
                                name + "'");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '-';
    if (!ok) throw std::invalid_argument("name: only letters, digits, '.', '_' and '-' are allowed, got '" + name + "'");
  }
}

std::shared_ptr<Arena> Arena::heap() { return std::shared_ptr<Arena>(new Arena()); }

std::shared_ptr<Arena> Arena::create_shm(const std::string& name, std::size_t bytes, const ShmLimits& limits) {
  check_name(name);
  const ShmLimits l = limits.validated();
  const std::size_t header = Header::bytes_for(l);
  if (bytes < header + 4096 || bytes > (1ull << 40)) {
    throw std::invalid_argument("size: must be in [" + std::to_string(header + 4096) + ", 2^40] bytes for these limits, got " +
                                std::to_string(bytes));
  }
  bytes = round_up(bytes, 4096);
  const std::string path = "/" + name;
  const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    if (errno == EEXIST) throw std::invalid_argument("name: shared-memory segment '" + name + "' already exists");
    throw std::system_error(errno, std::generic_category(), "shm_open " + name);
  }
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    ::close(fd);
    ::shm_unlink(path.c_str());
    throw std::system_error(e, std::generic_category(), "ftruncate " + name);
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    ::shm_unlink(path.c_str());
    throw std::system_error(e, std::generic_category(), "mmap " + name);
  }
  std::shared_ptr<Arena> a(new Arena());
  a->base_ = static_cast<std::uint8_t*>(p);
  a->bytes_ = bytes;
  a->name_ = name;
  a->creator_pid_ = static_cast<int>(::getpid());
  Header* h = a->hdr();  // the segment is zero-filled by ftruncate
  h->version = kVersion;
  h->header_bytes = static_cast<std::uint32_t>(header);
  h->total_bytes = bytes;
  h->max_objects = static_cast<std::uint32_t>(l.max_objects);
  h->max_workers = static_cast<std::uint32_t>(l.max_workers);
  h->log_records = l.log_records;
  h->creator_pid = a->creator_pid_;
  h->bump.store(header, std::memory_order_relaxed);
  h->magic.store(kMagic, std::memory_order_release);
  return a;
}

std::shared_ptr<Arena> Arena::attach_shm(const std::string& name) {
  check_name(name);
  const std::string path = "/" + name;
  const int fd = ::shm_open(path.c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT) throw std::invalid_argument("name: no shared-memory state called '" + name + "'");
    throw std::system_error(errno, std::generic_category(), "shm_open " + name);
  }
  // The creator may still be sizing and formatting it: wait (briefly) for its header.
  struct stat st {};
  std::size_t size = 0;
  for (int tries = 0;; ++tries) {
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw std::system_error(e, std::generic_category(), "fstat " + name);
    }
    size = static_cast<std::size_t>(st.st_size);
    if (size >= sizeof(Header) || tries > 1000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (size < sizeof(Header)) {
    ::close(fd);
    throw std::invalid_argument("name: '" + name + "' is not a vnfkit shared-state segment (too small)");
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw std::system_error(e, std::generic_category(), "mmap " + name);
  std::shared_ptr<Arena> a(new Arena());
  a->base_ = static_cast<std::uint8_t*>(p);
  a->bytes_ = size;
  a->name_ = name;
  Header* h = a->hdr();
  for (int tries = 0; h->magic.load(std::memory_order_acquire) != kMagic; ++tries) {
    if (tries > 1000) throw std::invalid_argument("name: '" + name + "' is not a vnfkit shared-state segment (bad magic)");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (h->version != kVersion || h->total_bytes != size) {
    throw std::invalid_argument("name: '" + name + "' has an unsupported layout (version " + std::to_string(h->version) + ")");
  }
  return a;
}

Arena::~Arena() {
  if (base_) {
    unlink();
    ::munmap(base_, bytes_);
  }
  for (auto& b : heap_) std::free(b.mem);
}

bool Arena::is_owner() const noexcept { return base_ && creator_pid_ != 0 && creator_pid_ == static_cast<int>(::getpid()); }

void Arena::unlink() noexcept {
  if (!is_owner() || unlinked_) return;
  unlinked_ = true;
  ::shm_unlink(("/" + name_).c_str());
}

Arena::Header* Arena::hdr() const noexcept {
  static_assert(sizeof(Header) == 128);
  return reinterpret_cast<Header*>(base_);
}

std::size_t Arena::used_bytes() const noexcept {
  return base_ ? static_cast<std::size_t>(hdr()->bump.load(std::memory_order_relaxed)) : heap_bytes_;
}
std::size_t Arena::max_objects() const noexcept { return base_ ? hdr()->max_objects : 0xFFFE; }
std::size_t Arena::max_workers() const noexcept { return base_ ? hdr()->max_workers : 1024; }

void Arena::lock() {
  if (!base_) {
    heap_mu_.lock();
    return;
  }
  const auto me = static_cast<std::int32_t>(::getpid());
  auto& w = hdr()->lock_pid;
  for (unsigned spins = 0;; ++spins) {
    std::int32_t cur = 0;
    if (w.compare_exchange_weak(cur, me, std::memory_order_acquire)) return;
    if (cur == me) {
      // Another thread of this process holds it: wait for it (declarations are short).
      std::this_thread::yield();
      continue;
    }
    if (cur != 0 && !alive(cur) && w.compare_exchange_strong(cur, me, std::memory_order_acquire)) return;
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void Arena::unlock() noexcept {
  if (!base_) {
    heap_mu_.unlock();
    return;
  }
  hdr()->lock_pid.store(0, std::memory_order_release);
}

Arena::Guard::Guard(Arena& a) : a_(a) {
  // Threads of one process share a pid; serialise them with the heap mutex first.
  if (a_.base_) a_.heap_mu_.lock();
  try {
    a_.lock();
  } catch (...) {
    if (a_.base_) a_.heap_mu_.unlock();
    throw;
  }
}
Arena::Guard::~Guard() {
  a_.unlock();
  if (a_.base_) a_.heap_mu_.unlock();
}

std::size_t Arena::count() const noexcept {
  return base_ ? hdr()->objects.load(std::memory_order_acquire) : heap_published_;
}

Arena::Entry Arena::entry(std::size_t id) const {
  if (id >= count()) throw std::invalid_argument("object: no shared variable with id " + std::to_string(id));
  if (!base_) {
    const auto& b = heap_[id];
    return Entry{b.name, b.kind, b.mem, b.bytes};
  }
  const DirEntry& d = hdr()->dir()[id];
  return Entry{std::string(d.name), static_cast<Kind>(d.kind), base_ + d.offset, static_cast<std::size_t>(d.bytes)};
}

void* Arena::bump(std::size_t bytes) {
  Header* h = hdr();
  const std::uint64_t at = h->bump.load(std::memory_order_relaxed);
  const std::size_t need = round_up(bytes, kAlign);
  if (at + need > bytes_) {
    throw std::invalid_argument("size: the shared-memory state '" + name_ + "' is full: " + std::to_string(need) +
                                " more bytes needed, " + std::to_string(bytes_ - at) + " of " + std::to_string(bytes_) +
                                " left (create it with a larger size)");
  }
  h->bump.store(at + need, std::memory_order_relaxed);
  // Back the new region with memory now (it reads as zero already): a declaration, not the packet
  // path, pays for the page allocation. Segment memory is only committed as it is declared.
  std::memset(base_ + at, 0, need);
  return base_ + at;
}

void* Arena::allocate(const std::string& name, Kind kind, std::size_t bytes) {
  if (name.empty() || name.size() > kNameMax) throw std::invalid_argument("name: must be 1-200 characters");
  const std::size_t id = count();
  if (id >= max_objects()) {
    throw std::invalid_argument("name: too many shared objects (" + std::to_string(max_objects()) + " declared)");
  }
  if (!base_) {
    if (heap_.size() > heap_published_) throw std::logic_error("arena: allocate() twice without publish()");
    const std::size_t need = round_up(std::max<std::size_t>(bytes, 1), kAlign);
    void* mem = std::aligned_alloc(kAlign, need);
    if (!mem) throw std::bad_alloc();
    std::memset(mem, 0, need);
    heap_.push_back(HeapBlock{name, kind, mem, bytes});
    heap_bytes_ += need;
    return mem;
  }
  void* mem = bump(bytes);
  DirEntry& d = hdr()->dir()[id];
  std::memset(&d, 0, sizeof d);
  std::memcpy(d.name, name.data(), name.size());
  d.offset = static_cast<std::uint64_t>(static_cast<std::uint8_t*>(mem) - base_);
  d.bytes = bytes;
  d.kind = static_cast<std::uint32_t>(kind);
  return mem;
}

void Arena::publish() noexcept {
  if (!base_) {
    heap_published_ = heap_.size();
    return;
  }
  hdr()->objects.fetch_add(1, std::memory_order_release);
}

ftlog::LogShared* Arena::log_slot(std::uint16_t thread, bool create) {
  if (!base_) return nullptr;
  Header* h = hdr();
  if (thread >= h->max_workers) {
    throw std::invalid_argument("thread: must be < " + std::to_string(h->max_workers) + " (max_workers of '" + name_ + "')");
  }
  auto& slot = h->logs()[thread];
  std::uint64_t off = slot.load(std::memory_order_acquire);
  if (off == 0 && create) {
    Guard g(*this);
    off = slot.load(std::memory_order_acquire);
    if (off == 0) {
      void* mem = bump(ftlog::LogShared::bytes_for(static_cast<std::size_t>(h->log_records)));
      auto* ls = static_cast<ftlog::LogShared*>(mem);
      ls->capacity = h->log_records;
      ls->thread = thread;
      off = static_cast<std::uint64_t>(static_cast<std::uint8_t*>(mem) - base_);
      slot.store(off, std::memory_order_release);
    }
  }
  return off ? reinterpret_cast<ftlog::LogShared*>(base_ + off) : nullptr;
}

}  // namespace vnfkit::state
