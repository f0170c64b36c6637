// Fast hashing of FlowKey and the cache-line bucketed index shared by the flow tables.
//
// hash_key(): a multiply-xorshift (128-bit multiply, fold) over the five 64-bit words of the
// 40-byte key. It is deterministic across runs and machines (tables rebuild their index from the
// keys on restore, so the hash never appears in a snapshot).
//
// KeyIndex: open addressing over 64-byte buckets. A bucket holds 10 ways of (16-bit signature,
// 32-bit slot index) plus an overflow counter: the number of keys whose probe sequence started at
// or before this bucket and continued past it. A lookup scans its home bucket and only moves on
// while the overflow counter is non-zero, so misses usually cost one cache line; deletion simply
// clears a way and decrements the counters along the path (no tombstones). The bucket count is
// not rounded to a power of two (the home bucket is a multiply-shift of the hash), so the index
// stays small: ~8 bytes per entry at the 80 % way occupancy it is sized for, which keeps a 1 M
// table's index in the last-level cache. A signature match is confirmed by the full key, so a
// false match (about 1 in 65 535 per occupied way) costs one record read, never a wrong answer. The index never owns
// keys: the caller resolves a slot to its key with a callback, so the same index serves the
// FlowTable (stable slots into a record array) and the ExceptionTable (dense arrays).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vnfkit/flow/flow_key.hpp"

namespace vnfkit::flow {

// Allocator for big hot tables: 64-byte aligned always; blocks of 2 MiB or more are 2 MiB aligned
// and advised to use transparent huge pages (random probes into a 100 MB table otherwise pay a
// TLB miss each).
template <typename T>
struct TableAllocator {
  using value_type = T;
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  TableAllocator() noexcept = default;
  template <typename U>
  TableAllocator(const TableAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    const std::size_t align = bytes >= kHuge ? kHuge : 64;
    void* p = ::operator new(bytes, std::align_val_t{align});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kHuge) (void)madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    ::operator delete(p, std::align_val_t{bytes >= kHuge ? kHuge : 64});
  }
  template <typename U>
  friend bool operator==(const TableAllocator&, const TableAllocator<U>&) noexcept { return true; }
};

// Equality of two keys as five 64-bit words (no memcmp call on the hot path).
inline bool key_equal(const FlowKey& a, const FlowKey& b) noexcept {
  std::uint64_t x[5], y[5];
  std::memcpy(x, &a, sizeof(x));
  std::memcpy(y, &b, sizeof(y));
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

inline constexpr std::uint32_t kNoSlot = 0xFFFFFFFFu;

__extension__ typedef unsigned __int128 U128;

inline std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept {
  const U128 r = static_cast<U128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

inline std::uint64_t hash_key(const FlowKey& k) noexcept {
  std::uint64_t w[5];
  std::memcpy(w, &k, sizeof(w));
  const std::uint64_t a = mix64(w[0] ^ 0xa0761d6478bd642full, w[1] ^ 0xe7037ed1a0b428dbull);
  const std::uint64_t b = mix64(w[2] ^ 0x8ebc6af09c88c6e3ull, w[3] ^ 0x589965cc75374cc3ull);
  return mix64(a ^ b ^ 0x1d8e4e27c47d124full, w[4] ^ 0x9E3779B97F4A7C15ull);
}

struct alignas(64) IndexBucket {
  static constexpr int kWays = 10;
  std::uint16_t sig[kWays];   // 0 = empty way
  std::uint32_t overflow;     // keys that probed past this bucket
  std::uint32_t slot[kWays];
};
static_assert(sizeof(IndexBucket) == 64);

// Bit w set where way w of b holds signature s (SSE2: two 8-lane compares packed into one
// movemask; the second load's lanes past sig[9] are the overflow counter and slots, masked off).
inline unsigned match_ways(const IndexBucket& b, std::uint16_t s) noexcept {
#if defined(__SSE2__)
  const __m128i v = _mm_set1_epi16(static_cast<short>(s));
  const auto* p = reinterpret_cast<const __m128i*>(&b);
  const __m128i lo = _mm_cmpeq_epi16(_mm_load_si128(p), v);
  const __m128i hi = _mm_cmpeq_epi16(_mm_load_si128(p + 1), v);
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_packs_epi16(lo, hi))) & 0x3FFu;
#else
  unsigned m = 0;
  for (int w = 0; w < IndexBucket::kWays; ++w) m |= static_cast<unsigned>(b.sig[w] == s) << w;
  return m;
#endif
}

class KeyIndex {
 public:
  KeyIndex() { reset(0); }
  explicit KeyIndex(std::size_t max_entries) { reset(max_entries); }

  // Drops every entry and sizes the index for up to max_entries keys at <= 80% way occupancy.
  void reset(std::size_t max_entries) {
    std::size_t n = (max_entries * 5 + 4 * IndexBucket::kWays - 1) / (4 * IndexBucket::kWays);
    if (n < 2) n = 2;
    buckets_.assign(n, IndexBucket{});
    n_ = n;
    max_entries_ = max_entries;
  }
  [[nodiscard]] std::size_t max_entries() const noexcept { return max_entries_; }
  [[nodiscard]] std::size_t bucket_count() const noexcept { return buckets_.size(); }
  [[nodiscard]] std::size_t memory_bytes() const noexcept { return buckets_.size() * sizeof(IndexBucket); }

  // The top 16 bits of the hash, never 0 (the empty way's mark).
  static std::uint16_t sig_of(std::uint64_t h) noexcept {
    const auto s = static_cast<std::uint16_t>(h >> 48);
    return static_cast<std::uint16_t>(s + (s == 0));
  }
  // Low 32 bits of the hash scaled to [0, bucket_count()) (independent of the signature's bits).
  [[nodiscard]] std::size_t home(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(static_cast<std::uint32_t>(h)) * n_) >> 32);
  }
  [[nodiscard]] std::size_t next(std::size_t i) const noexcept { return i + 1 == n_ ? 0 : i + 1; }
  void prefetch(std::uint64_t h) const noexcept { __builtin_prefetch(&buckets_[home(h)]); }

  // A batched lookup in stages, each a few keys ahead of the next (see FlowTable's pipeline):
  // begin() names h's home bucket and prefetches it; peek() reads that bucket once and notes the
  // first signature match (the record to prefetch); the caller then confirms cand by its key.
  struct Probe {
    std::uint64_t h = 0;
    std::uint32_t bucket = 0;    // home bucket
    std::uint32_t cand = kNoSlot;  // peek(): first way whose signature matches, kNoSlot if none
    bool sole = false;  // peek(): no other way matches and no key probed past the bucket, so a key
                        // that is not at cand is not in the index (valid until the next insert)
  };
  [[nodiscard]] Probe begin(std::uint64_t h) const noexcept {
    Probe p;
    p.h = h;
    p.bucket = static_cast<std::uint32_t>(home(h));
    __builtin_prefetch(&buckets_[p.bucket]);
    return p;
  }
  void peek(Probe& p) const noexcept {
    const IndexBucket& b = buckets_[p.bucket];
    const unsigned m = match_ways(b, sig_of(p.h));
    // Way 9 stands in when nothing matches, so the load is in bounds and the select branch-free.
    const std::uint32_t first = b.slot[std::countr_zero(m | (1u << (IndexBucket::kWays - 1)))];
    p.cand = m ? first : kNoSlot;
    p.sole = (m & (m - 1)) == 0 && b.overflow == 0;
  }

  // First slot in the home bucket whose signature matches (a candidate, for prefetching records).
  [[nodiscard]] std::uint32_t first_candidate(std::uint64_t h) const noexcept {
    const IndexBucket& b = buckets_[home(h)];
    const unsigned m = match_ways(b, sig_of(h));
    return m ? b.slot[std::countr_zero(m)] : kNoSlot;
  }

  // The slot holding key k (hash h), or kNoSlot. key_at(slot) returns the key stored at slot.
  template <typename KeyAt>
  [[nodiscard]] std::uint32_t find(const FlowKey& k, std::uint64_t h, KeyAt&& key_at) const noexcept {
    const std::uint16_t s = sig_of(h);
    std::size_t i = home(h);
    for (std::size_t step = 0; step < n_; ++step) {
      const IndexBucket& b = buckets_[i];
      for (unsigned m = match_ways(b, s); m; m &= m - 1) {
        const std::uint32_t slot = b.slot[std::countr_zero(m)];
        if (key_equal(key_at(slot), k)) return slot;
      }
      if (b.overflow == 0) return kNoSlot;
      i = next(i);
    }
    return kNoSlot;
  }

  // Adds (h -> slot). The caller guarantees the key is absent and size < max_entries().
  void insert(std::uint64_t h, std::uint32_t slot) noexcept {
    const std::uint16_t s = sig_of(h);
    std::size_t i = home(h);
    for (;;) {
      IndexBucket& b = buckets_[i];
      for (int w = 0; w < IndexBucket::kWays; ++w) {
        if (b.sig[w] == 0) {
          b.sig[w] = s;
          b.slot[w] = slot;
          return;
        }
      }
      ++b.overflow;
      i = next(i);
    }
  }

  // Removes the way that maps (h -> slot). Returns false if it is not there.
  bool erase(std::uint64_t h, std::uint32_t slot) noexcept {
    const std::uint16_t s = sig_of(h);
    const std::size_t start = home(h);
    std::size_t i = start;
    for (std::size_t step = 0; step < n_; ++step) {
      IndexBucket& b = buckets_[i];
      for (int w = 0; w < IndexBucket::kWays; ++w) {
        if (b.sig[w] == s && b.slot[w] == slot) {
          b.sig[w] = 0;
          b.slot[w] = 0;
          for (std::size_t j = start; j != i; j = next(j)) --buckets_[j].overflow;
          return true;
        }
      }
      if (b.overflow == 0) return false;
      i = next(i);
    }
    return false;
  }

  // Re-points (h -> old_slot) at new_slot (used when a dense table moves an entry).
  bool relabel(std::uint64_t h, std::uint32_t old_slot, std::uint32_t new_slot) noexcept {
    const std::uint16_t s = sig_of(h);
    std::size_t i = home(h);
    for (std::size_t step = 0; step < n_; ++step) {
      IndexBucket& b = buckets_[i];
      for (int w = 0; w < IndexBucket::kWays; ++w) {
        if (b.sig[w] == s && b.slot[w] == old_slot) {
          b.slot[w] = new_slot;
          return true;
        }
      }
      if (b.overflow == 0) return false;
      i = next(i);
    }
    return false;
  }

 private:
  std::vector<IndexBucket, TableAllocator<IndexBucket>> buckets_;
  std::size_t n_ = 0;  // bucket count
  std::size_t max_entries_ = 0;
};

}  // namespace vnfkit::flow
