// Buffer<T>: the storage of one PacketBatch column (or of its packet bytes), with the interface of
// std::vector<T> that the engine uses, plus two things a vector cannot do:
//
//  * Views outlive reallocation. `owner()` hands out a shared reference to the current memory block
//    (the bridge makes it the base object of a numpy view). When the buffer must reallocate (grow
//    past its capacity, swap in another vector, reserve) while such a reference is alive, it moves
//    to a fresh block and leaves the old one to its viewers: a view taken earlier keeps pointing at
//    valid (if stale) memory instead of freed memory. A buffer nobody views reallocates in place,
//    exactly like a vector.
//  * External memory. `Buffer::external(ptr, n, keep)` wraps memory the caller owns (a slab of a
//    shared-memory packet pool), holding `keep` alive as long as the buffer or a view uses it.
//    Element writes go to that memory; growth past `n` copies into an owned block first.
//
// Owned memory is allocated uninitialised: growing never zero-fills twice (resize() value-initialises
// the new elements once; resize_for_overwrite() leaves them for the caller to write). Blocks of
// 2 MiB or more are 2 MiB aligned and advised to use transparent huge pages, so filling a large
// batch (a whole pcap file) takes a few hundred page faults instead of one per 4 KiB. When resize()
// (to zero) needs a block of kZeroMapped bytes or more, the block is mapped straight from the
// kernel, whose fresh pages are already zero: the new elements are not written at all (a column
// nobody writes costs no memory traffic; the first write to a page pays its fault).
//
// Copies are deep (value semantics, like std::vector); moves steal. Element access is a raw pointer
// dereference, as fast as a vector's. Not thread-safe (one batch is used by one thread at a time;
// the bridge's UseGuard enforces that).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace vnfkit::packet {

template <typename T>
class Buffer {
  static_assert(std::is_trivially_copyable_v<T>, "Buffer holds plain data only");

 public:
  using value_type = T;
  using size_type = std::size_t;
  using iterator = T*;
  using const_iterator = const T*;

  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(std::initializer_list<T> init) { assign(init.begin(), init.end()); }
  Buffer(const Buffer& o) { assign(o.begin(), o.end()); }
  Buffer(Buffer&& o) noexcept { steal(o); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) assign(o.begin(), o.end());
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) steal(o);
    return *this;
  }
  Buffer& operator=(std::initializer_list<T> init) {
    assign(init.begin(), init.end());
    return *this;
  }
  Buffer& operator=(const std::vector<T>& v) {
    assign(v.begin(), v.end());
    return *this;
  }

  // n elements at `ptr`, owned by the caller; `keep` stays alive while this buffer or a view of it
  // uses the memory. Never frees `ptr`.
  static Buffer external(T* ptr, std::size_t n, std::shared_ptr<void> keep) {
    Buffer b;
    b.block_ = std::make_shared<Block>();
    b.block_->keep = std::move(keep);
    b.ptr_ = ptr;
    b.size_ = n;
    b.cap_ = n;
    return b;
  }

  [[nodiscard]] T* data() noexcept { return ptr_; }
  [[nodiscard]] const T* data() const noexcept { return ptr_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  // Whether the memory is the caller's (see external()) rather than an owned block.
  [[nodiscard]] bool is_external() const noexcept { return block_ && block_->keep != nullptr; }
  T& operator[](std::size_t i) noexcept { return ptr_[i]; }
  const T& operator[](std::size_t i) const noexcept { return ptr_[i]; }
  T* begin() noexcept { return ptr_; }
  T* end() noexcept { return ptr_ + size_; }
  const T* begin() const noexcept { return ptr_; }
  const T* end() const noexcept { return ptr_ + size_; }
  T& front() noexcept { return ptr_[0]; }
  T& back() noexcept { return ptr_[size_ - 1]; }
  const T& back() const noexcept { return ptr_[size_ - 1]; }
  operator std::span<T>() noexcept { return {ptr_, size_}; }              // NOLINT: like a vector
  operator std::span<const T>() const noexcept { return {ptr_, size_}; }  // NOLINT

  friend bool operator==(const Buffer& a, const Buffer& b) noexcept {
    return a.size_ == b.size_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator==(const Buffer& a, const std::vector<T>& b) noexcept {
    return a.size_ == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }

  // A shared reference to the current memory (nullptr while nothing was ever allocated).
  [[nodiscard]] std::shared_ptr<void> owner() const noexcept { return block_; }

  void reserve(std::size_t n) {
    if (n > cap_) regrow(n);
  }
  // New elements are zeroed (value-initialised), as with std::vector::resize.
  void resize(std::size_t n) {
    if (n > cap_ && std::max(n, cap_ * 2) * sizeof(T) >= kZeroMapped && value_init_is_zero()) {
      regrow(std::max(n, cap_ * 2), /*zeroed=*/true);  // elements past the old size are already zero
      set_size(n);
      return;
    }
    resize(n, T{});
  }
  void resize(std::size_t n, const T& v) {
    if (n > cap_) regrow(std::max(n, cap_ * 2));
    const std::size_t old = size_;
    set_size(n);
    if (n > old) std::fill(ptr_ + old, ptr_ + n, v);
  }
  // Grows (or shrinks) to n elements without initialising new ones: the caller writes every new
  // element before anything reads it (a reader filling a column, a copy into the data buffer).
  void resize_for_overwrite(std::size_t n) {
    if (n > cap_) regrow(std::max(n, cap_ * 2));
    set_size(n);
  }
  void clear() noexcept { set_size(0); }
  void push_back(const T& v) {
    if (size_ == cap_) regrow(std::max<std::size_t>(16, cap_ * 2));
    set_size(size_ + 1);
    ptr_[size_ - 1] = v;
  }
  void pop_back() noexcept { set_size(size_ - 1); }
  void assign(std::size_t n, const T& v) {  // NOLINT: vector's overload
    clear();
    resize(n, v);
  }
  template <typename It>
    requires(!std::is_integral_v<It>)
  void assign(It first, It last) {
    const auto n = static_cast<std::size_t>(std::distance(first, last));
    // `first` may point into this buffer's own memory: build the new contents aside.
    std::vector<T> tmp(first, last);
    clear();
    if (n > cap_) regrow(n);
    set_size(n);
    if (n) std::memcpy(ptr_, tmp.data(), n * sizeof(T));
  }
  // Insert [first, last) at `pos` (any position; appending is the common case).
  template <typename It>
    requires(!std::is_integral_v<It>)
  T* insert(T* pos, It first, It last) {
    const auto at = static_cast<std::size_t>(pos - ptr_);
    std::vector<T> tmp(first, last);
    const std::size_t k = tmp.size();
    if (size_ + k > cap_) regrow(std::max(size_ + k, cap_ * 2));
    const std::size_t old = size_;
    set_size(old + k);
    if (k == 0) return ptr_ + at;  // nothing to move (and ptr_ may be null: memmove's args must not be)
    if (old > at) std::memmove(ptr_ + at + k, ptr_ + at, (old - at) * sizeof(T));
    std::memcpy(ptr_ + at, tmp.data(), k * sizeof(T));
    return ptr_ + at;
  }
  // Exchange contents with a vector (the engine builds a new buffer aside, then swaps it in). The
  // vector's memory becomes this buffer's block; `v` receives a copy of the old contents.
  void swap(std::vector<T>& v) {
    std::vector<T> old(begin(), end());
    auto blk = std::make_shared<Block>();
    const std::size_t n = v.size();
    blk->owned = std::move(v);
    blk->owned.resize(blk->owned.capacity());  // the whole capacity is ours to grow into
    block_ = std::move(blk);
    ptr_ = block_->owned.data();
    cap_ = block_->owned.size();
    size_ = n;
    v = std::move(old);
  }
  void swap(Buffer& o) noexcept {
    std::swap(block_, o.block_);
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    std::swap(cap_, o.cap_);
  }

 private:
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  // resize() maps blocks of this size or more zeroed from the kernel (smaller ones come from the
  // heap, whose reused memory is cheaper to zero than fresh pages are to fault in).
  static constexpr std::size_t kZeroMapped = std::size_t{4} << 20;
  static bool value_init_is_zero() noexcept {
    static const bool zero = [] {
      const T v{};
      unsigned char bytes[sizeof(T)];
      std::memcpy(bytes, &v, sizeof(T));
      return std::all_of(bytes, bytes + sizeof(T), [](unsigned char c) { return c == 0; });
    }();
    return zero;
  }
  static std::align_val_t align_for(std::size_t bytes) noexcept {
    return std::align_val_t{bytes >= kHuge ? kHuge : (alignof(T) > 64 ? alignof(T) : 64)};
  }
  // One memory block: our own uninitialised allocation (`raw`), a vector handed over by swap()
  // (`owned`, sized to its capacity), or the caller's memory (`keep` set).
  struct Block {
    T* raw = nullptr;
    std::size_t raw_bytes = 0;
    bool mapped = false;  // raw is an anonymous mapping of raw_bytes (rounded to pages), not operator new's
    std::vector<T> owned;
    std::shared_ptr<void> keep;  // external memory: what keeps it alive
    Block() = default;
    // n elements, uninitialised; or, with `zeroed`, all zero (a fresh mapping where there is mmap).
    explicit Block(std::size_t n, bool zeroed = false) : raw_bytes(n * sizeof(T)) {
#if defined(__linux__)
      if (zeroed) {
        void* m = ::mmap(nullptr, raw_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) throw std::bad_alloc();
        raw = static_cast<T*>(m);
        mapped = true;
      }
#endif
      if (!raw) {
        raw = static_cast<T*>(::operator new(raw_bytes, align_for(raw_bytes)));
        if (zeroed) std::memset(static_cast<void*>(raw), 0, raw_bytes);
      }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (raw_bytes >= kHuge) (void)::madvise(raw, raw_bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
    }
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() {
#if defined(__linux__)
      if (mapped) {
        ::munmap(raw, raw_bytes);
        return;
      }
#endif
      if (raw) ::operator delete(raw, align_for(raw_bytes));
    }
  };

  void steal(Buffer& o) noexcept {
    block_ = std::move(o.block_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    size_ = std::exchange(o.size_, 0);
    cap_ = std::exchange(o.cap_, 0);
  }
  void set_size(std::size_t n) noexcept { size_ = n; }
  // Move to memory for at least `n` elements, keeping the contents.
  void regrow(std::size_t n, bool zeroed = false) {
    // A fresh uninitialised (or all-zero) block holding the live elements. The old block is
    // dropped here if nobody views it, or left to its viewers otherwise.
    auto blk = std::make_shared<Block>(n, zeroed);
    if (size_) std::memcpy(blk->raw, ptr_, size_ * sizeof(T));
    block_ = std::move(blk);
    ptr_ = block_->raw;
    cap_ = n;
  }

  std::shared_ptr<Block> block_;
  T* ptr_ = nullptr;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

}  // namespace vnfkit::packet
