# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: auto_pickle=False, autotestdict=False
# distutils: language = c++
"""Per-packet stages of the WAN optimizer (redundancy elimination), written in Cython against the
engine declarations in vnfkit.pxd. The design and the encoded payload format are described in
vnfkit/nfs/wanopt.py; this module is the per-packet code: the shared payload cache (ring buffer +
per-block generation stamps + fingerprint table), the encoder and the decoder."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memmove, memset
from libcpp.vector cimport vector

from vnfkit cimport (PacketBatch, DropReason, kFlagHasL4, kFlagFragment, batch_from_object,
                     crc32c_bytes)

cdef extern from *:
    """
    #include <chrono>
    #include <cstdint>
    #include <cstring>
    #include <thread>
    // Atomics on plain uint64_t words shared by worker threads (GCC/Clang builtins).
    static inline std::uint64_t wo_load_acquire(const std::uint64_t* p) noexcept { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline std::uint64_t wo_load_relaxed(const std::uint64_t* p) noexcept { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void wo_store_release(std::uint64_t* p, std::uint64_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void wo_store_relaxed(std::uint64_t* p, std::uint64_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline std::uint64_t wo_fetch_add(std::uint64_t* p, std::uint64_t v) noexcept { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline bool wo_cas(std::uint64_t* p, std::uint64_t* expected, std::uint64_t desired) noexcept {
      return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    static inline void wo_fence_acquire() noexcept { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void wo_prefetch(const void* p) noexcept { __builtin_prefetch(p, 0, 1); }
    static inline std::uint64_t wo_now_ns() noexcept {
      return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch()).count());
    }
    // Back off while another worker stores what we wait for: a few yields, then short sleeps (a
    // yield-only spin can starve the very thread it waits for on a loaded machine).
    static inline void wo_backoff(unsigned round) noexcept {
      if (round < 8) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(round < 64 ? 5 : 20));
    }
    // Number of equal leading bytes of a[0, n) and b[0, n), 8 bytes at a time.
    static inline std::size_t wo_fwd_equal(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) noexcept {
      std::size_t k = 0;
      while (k + 8 <= n) {
        std::uint64_t x, y;
        std::memcpy(&x, a + k, 8);
        std::memcpy(&y, b + k, 8);
        if (x != y) return k + static_cast<std::size_t>(__builtin_ctzll(x ^ y) >> 3);
        k += 8;
      }
      while (k < n && a[k] == b[k]) ++k;
      return k;
    }
    // Number of equal trailing bytes of a[-n, 0) and b[-n, 0) (a and b point one past the end).
    static inline std::size_t wo_bwd_equal(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) noexcept {
      std::size_t k = 0;
      while (k + 8 <= n) {
        std::uint64_t x, y;
        std::memcpy(&x, a - k - 8, 8);
        std::memcpy(&y, b - k - 8, 8);
        if (x != y) return k + static_cast<std::size_t>(__builtin_clzll(x ^ y) >> 3);
        k += 8;
      }
      while (k < n && a[-static_cast<std::ptrdiff_t>(k) - 1] == b[-static_cast<std::ptrdiff_t>(k) - 1]) ++k;
      return k;
    }
    static inline std::uint64_t wo_rotl(std::uint64_t x, unsigned r) noexcept {
      r &= 63u;
      return r ? (x << r) | (x >> (64u - r)) : x;
    }
    // Ones'-complement sum (RFC 1071) of n bytes in network order, added to s (unfolded).
    static inline std::uint64_t wo_sum(const std::uint8_t* p, std::size_t n, std::uint64_t s) noexcept {
      while (n >= 4) {
        std::uint32_t w;
        std::memcpy(&w, p, 4);
        s += __builtin_bswap32(w);
        p += 4;
        n -= 4;
      }
      while (n >= 2) { s += (std::uint64_t{p[0]} << 8) | p[1]; p += 2; n -= 2; }
      if (n) s += std::uint64_t{p[0]} << 8;
      return s;
    }
    static inline std::uint16_t wo_fold(std::uint64_t s) noexcept {
      while (s >> 16) s = (s & 0xFFFFu) + (s >> 16);
      return static_cast<std::uint16_t>(s);
    }
    // Full IPv4 header / TCP-UDP checksums (the value to write, computed as if the field were zero):
    // the packet helper's functions where the engine has them, else the same sums done here.
    #if __has_include("vnfkit/packet/checksum.hpp")
    #include <span>
    #include "vnfkit/packet/checksum.hpp"
    #define WO_ENGINE_CHECKSUMS 1
    static inline std::uint16_t wo_ipv4_checksum(const std::uint8_t* h, std::size_t n) noexcept {
      return vnfkit::packet::ipv4_header_checksum(std::span<const std::uint8_t>(h, n));
    }
    static inline std::uint16_t wo_l4_checksum(const std::uint8_t* src, const std::uint8_t* dst, bool v6,
                                               std::uint8_t proto, const std::uint8_t* l4, std::size_t n) noexcept {
      return vnfkit::packet::l4_checksum(src, dst, v6, proto, std::span<const std::uint8_t>(l4, n));
    }
    #else
    #define WO_ENGINE_CHECKSUMS 0
    static inline std::uint16_t wo_ipv4_checksum(const std::uint8_t* h, std::size_t n) noexcept {
      // the checksum field (bytes 10-11) counts as zero
      std::uint64_t s = wo_sum(h, 10, 0);
      s = wo_sum(h + 12, n - 12, s);
      return static_cast<std::uint16_t>(~wo_fold(s));
    }
    static inline std::uint16_t wo_l4_checksum(const std::uint8_t* src, const std::uint8_t* dst, bool v6,
                                               std::uint8_t proto, const std::uint8_t* l4, std::size_t n) noexcept {
      const std::size_t alen = v6 ? 16 : 4;
      const std::size_t cpos = proto == 6 ? 16 : 6;
      std::uint64_t s = wo_sum(src, alen, 0);
      s = wo_sum(dst, alen, s);
      s += proto;
      s += n;
      s = wo_sum(l4, cpos, s);
      s = wo_sum(l4 + cpos + 2, n - cpos - 2, s);
      return static_cast<std::uint16_t>(~wo_fold(s));
    }
    #endif
    """
    uint64_t wo_load_acquire(const uint64_t* p) noexcept nogil
    uint64_t wo_load_relaxed(const uint64_t* p) noexcept nogil
    void wo_store_release(uint64_t* p, uint64_t v) noexcept nogil
    void wo_store_relaxed(uint64_t* p, uint64_t v) noexcept nogil
    uint64_t wo_fetch_add(uint64_t* p, uint64_t v) noexcept nogil
    bint wo_cas(uint64_t* p, uint64_t* expected, uint64_t desired) noexcept nogil
    void wo_fence_acquire() noexcept nogil
    void wo_prefetch(const void* p) noexcept nogil
    uint64_t wo_now_ns() noexcept nogil
    void wo_backoff(unsigned round) noexcept nogil
    uint64_t wo_rotl(uint64_t x, unsigned r) noexcept nogil
    size_t wo_fwd_equal(const uint8_t* a, const uint8_t* b, size_t n) noexcept nogil
    size_t wo_bwd_equal(const uint8_t* a, const uint8_t* b, size_t n) noexcept nogil
    uint64_t wo_sum(const uint8_t* p, size_t n, uint64_t s) noexcept nogil
    uint16_t wo_fold(uint64_t s) noexcept nogil
    uint16_t wo_ipv4_checksum(const uint8_t* h, size_t n) noexcept nogil
    uint16_t wo_l4_checksum(const uint8_t* src, const uint8_t* dst, bint v6, uint8_t proto, const uint8_t* l4,
                            size_t n) noexcept nogil
    const int WO_ENGINE_CHECKSUMS

# Two-thread misuse guard: the same "in use" registry as vnfkit._core's bound objects (use_guard.hpp),
# reached through the capsule _core exports, so a batch encoded here while another thread parses it
# in _core conflicts too. A mark is held for one call (taken with the GIL, dropped after the loop).
cdef extern from *:
    """
    #include "use_guard.hpp"
    static vnfkit::bridge::UseRegistry* wo_registry = nullptr;
    static inline void wo_set_registry(void* r) noexcept { wo_registry = static_cast<vnfkit::bridge::UseRegistry*>(r); }
    static inline bool wo_acquire(const void* obj) noexcept {
      return wo_registry->acquire(obj, vnfkit::bridge::UseRegistry::Mode::kExclusive);
    }
    static inline void wo_release(const void* obj) noexcept { wo_registry->release(obj); }
    static inline const char* wo_batch_rule() noexcept { return vnfkit::bridge::kBatchRule; }
    """
    void wo_set_registry(void* r) noexcept
    bint wo_acquire(const void* obj) noexcept
    void wo_release(const void* obj) noexcept
    const char* wo_batch_rule() noexcept

from cpython.pycapsule cimport PyCapsule_GetPointer
from vnfkit import _core as _vk_core
wo_set_registry(PyCapsule_GetPointer(_vk_core._use_registry, "vnfkit._core.use_registry"))

STATS_RULE = ("use one WanOptimizer / WanOptDecoder (one Stats) per worker thread; "
              "the cache may be shared")


cdef int _use_begin(const void* batch, Stats stats) except -1:
    """Mark the batch and the stats in use for one call; RuntimeError if another thread uses either."""
    if not wo_acquire(<const void*> stats):
        raise RuntimeError(f"Stats: used from two threads at once; {STATS_RULE}")
    if not wo_acquire(batch):
        wo_release(<const void*> stats)
        raise RuntimeError(f"PacketBatch: used from two threads at once; {wo_batch_rule().decode()}")
    return 0


cdef void _use_end(const void* batch, Stats stats) noexcept:
    wo_release(batch)
    wo_release(<const void*> stats)


# ---- encoded payload format (see vnfkit/nfs/wanopt.py) ----
cdef enum:
    MAGIC = 0xA7
    VERSION = 1
    FLAG_STORED = 1
    HEADER_LEN = 14
    SHIM_TAG = 0x80
    SHIM_LEN = 7
    MAX_LITERAL = 128
    BLOCK_SHIFT = 6
    BLOCK = 64

cdef uint64_t WRITING = 1ULL << 63
cdef uint64_t GEN_MASK = (1ULL << 48) - 1       # stamp bits 0-47: absolute block + 1
cdef int OWNER_SHIFT = 48                        # stamp bits 48-62: owner (encoder queue + 1, 0 = none)
MAX_OWNER = 0x7FFF
MAX_WAIT_NS = 10 ** 12                           # decoder wait budget per call: at most 1000 s
cdef uint64_t MAX_BLOCK = (1ULL << 48) - 1

MAGIC_BYTE = MAGIC
ENGINE_CHECKSUMS = bool(WO_ENGINE_CHECKSUMS)   # True when built with the packet helper's checksums
FORMAT_VERSION = VERSION
HEADER_BYTES = HEADER_LEN
SHIM_BYTES = SHIM_LEN
BLOCK_BYTES = BLOCK

# Encoder counters (indices into Stats.c)
cdef enum:
    E_PACKETS = 0       # packets whose payload was encoded
    E_PASS = 1          # packets forwarded unchanged (no TCP/UDP payload, fragments, ...)
    E_BYTES_IN = 2      # payload bytes before encoding
    E_BYTES_OUT = 3     # payload bytes after encoding
    E_SHIMS = 4
    E_MATCHED = 5       # payload bytes replaced by shims
    E_STORED = 6        # packets whose payload went into the cache
    E_TOO_BIG = 7       # dropped: encoded packet would not fit the IP length field
    E_COUNT = 8

# Decoder counters
cdef enum:
    D_PACKETS = 0       # packets decoded
    D_PASS = 1          # forwarded unchanged (no TCP/UDP payload, ...)
    D_BYTES_IN = 2      # encoded payload bytes
    D_BYTES_OUT = 3     # decoded payload bytes
    D_SHIMS = 4
    D_STORED = 5
    D_FAIL_TRUNCATED = 6     # encoded payload shorter than its header or a record
    D_FAIL_MAGIC = 7         # not an encoded payload (magic byte)
    D_FAIL_VERSION = 8       # unknown format version or flags
    D_FAIL_RECORD = 9        # unknown record tag or zero-length shim
    D_FAIL_LENGTH = 10       # records do not add up to the declared length
    D_FAIL_MISSING = 11      # shim references bytes this decoder does not have (evicted / not seen yet)
    D_FAIL_CRC = 12          # rebuilt payload fails the CRC32C of the header
    D_FAIL_TOO_BIG = 13      # decoded packet would not fit the IP length field
    D_WAITED = 14            # shims that waited for another worker to store their bytes, then decoded
    D_WAIT_NS = 15           # total time spent waiting (ns)
    D_COUNT = 16

ENCODER_STATS = ("packets_encoded", "packets_passthrough", "bytes_in", "bytes_out", "shims",
                 "bytes_matched", "packets_stored", "dropped_too_big")
DECODER_STATS = ("packets_decoded", "packets_passthrough", "bytes_in", "bytes_out", "shims",
                 "packets_stored", "fail_truncated", "fail_bad_magic", "fail_bad_version",
                 "fail_bad_record", "fail_bad_length", "fail_missing_ref", "fail_bad_crc",
                 "fail_too_big", "waited", "wait_ns")


cdef class Stats:
    """Counters of one encoder or decoder instance (one worker; summed by the runner)."""
    cdef uint64_t c[16]
    cdef tuple names

    def __cinit__(self):
        memset(self.c, 0, sizeof(self.c))
        self.names = ()

    def __init__(self, tuple names):
        if len(names) > 16:
            raise ValueError("names: at most 16 counters")
        memset(self.c, 0, sizeof(self.c))
        self.names = names

    def as_dict(self):
        return {name: int(self.c[k]) for k, name in enumerate(self.names)}


# Buzhash table: 256 pseudo-random 64-bit words (splitmix64 of a fixed seed), identical everywhere.
cdef uint64_t BUZ[256]

cdef void _init_buz() noexcept:
    cdef uint64_t x = 0x5741_4E4F_5054_3031ULL  # "WANOPT01"
    cdef uint64_t z
    cdef int i
    for i in range(256):
        x += 0x9E3779B97F4A7C15ULL
        z = x
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        BUZ[i] = z ^ (z >> 31)

_init_buz()


def rolling_hashes(const uint8_t[::1] data, int window):
    """Buzhash of every `window`-byte window of `data` (list, one per start position); for tests."""
    cdef Py_ssize_t n = data.shape[0], j
    cdef uint64_t h = 0
    out = []
    if window < 1 or window > 64:
        raise ValueError("window: must be in [1, 64]")
    if n < window:
        return out
    for j in range(window):
        h = wo_rotl(h, 1) ^ BUZ[data[j]]
    out.append(h)
    for j in range(1, n - window + 1):
        h = wo_rotl(h, 1) ^ wo_rotl(BUZ[data[j - 1]], <unsigned> window) ^ BUZ[data[j + window - 1]]
        out.append(h)
    return out


def _resolve(object size, bint encoder, object window, object anchor_bits, object min_match, object table_bits,
             object min_store):
    """Validated cache parameters (size, window, anchor_bits, min_match, table_bits, min_store).

    Every number is checked as a Python int before it meets a C type, so a huge value is a
    ValueError naming the key, never an OverflowError from the conversion."""
    _int_arg(size, "cache_size", 4096, 1 << 30)
    if (size & (size - 1)) != 0:
        raise ValueError(f"cache_size: must be a power of two in [4096, 2**30], got {size}")
    _int_arg(window, "window", 8, 64)
    _int_arg(anchor_bits, "anchor_bits", 0, 16)
    _int_arg(min_match, "min_match", 8, 65535)
    if min_match < window:
        raise ValueError(f"min_match: must be >= window ({window}), got {min_match}")
    _int_arg(table_bits, "table_bits", 0, 28)
    if table_bits == 0:
        while (1 << table_bits) < (size >> anchor_bits) * 2:
            table_bits += 1
        table_bits = max(10, min(table_bits, 26))
    if table_bits < 4:
        raise ValueError(f"table_bits: must be 0 (auto) or in [4, 28], got {table_bits}")
    _int_arg(min_store, "min_store", 0, 65535)
    if min_store == 0:
        min_store = window
    return size, window, anchor_bits, min_match, table_bits, min_store


cdef uint64_t _layout_bytes(uint64_t size, bint encoder, int table_bits):
    cdef uint64_t at = 128 + (size >> BLOCK_SHIFT) * sizeof(uint64_t)
    if encoder:
        at += (1ULL << table_bits) * sizeof(uint64_t)
    return ((at + 63) & ~(<uint64_t> 63)) + size


def cache_bytes(object size, bint encoder, object window=32, object anchor_bits=4, object min_match=32,
                object table_bits=0, object min_store=0):
    """Bytes of shared memory a Cache with these parameters needs (for ``Cache(..., memory=...)``)."""
    size, window, anchor_bits, min_match, table_bits, min_store = _resolve(
        size, encoder, window, anchor_bits, min_match, table_bits, min_store)
    return _layout_bytes(size, encoder, table_bits)


cdef class Cache:
    """A payload cache: ring buffer of `size` bytes in 64-byte blocks, one generation stamp per block,
    and (encoder only) a fingerprint table and the shared write position. Safe to share between
    worker threads (all shared words are accessed atomically; block contents use a seqlock), and
    between worker processes when built over a shared byte region (``memory=``, a SharedBuffer of
    ``cache_bytes(...)`` bytes, e.g. from ``ctx.shared_buffer``)."""
    cdef uint8_t* ring
    cdef uint64_t* stamps
    cdef uint64_t* fps
    cdef uint64_t ring_size
    cdef uint64_t nblocks
    cdef uint64_t block_mask
    cdef uint64_t ring_mask
    cdef uint64_t fp_mask
    cdef uint64_t* next_block      # encoder: next free block (absolute), advanced by fetch-add
    cdef uint64_t own_next         # where next_block points for a cache in private memory
    cdef object memory             # the shared byte region the cache lives in (None: private)
    cdef object memory_view        # keeps the buffer export of `memory` alive
    cdef readonly int window
    cdef readonly int anchor_bits
    cdef readonly int min_match
    cdef readonly int table_bits
    cdef readonly int min_store
    cdef readonly bint encoder
    cdef uint64_t buzw[256]        # BUZ rotated by the window (the outgoing byte's term)

    def __cinit__(self):
        self.ring = NULL
        self.stamps = NULL
        self.fps = NULL
        self.next_block = &self.own_next
        self.memory = None
        self.memory_view = None

    def __init__(self, object size, bint encoder, object window=32, object anchor_bits=4, object min_match=32,
                 object table_bits=0, object min_store=0, object memory=None):
        if self.ring != NULL:
            raise RuntimeError("Cache: already initialised")
        cdef int i
        size, window, anchor_bits, min_match, table_bits, min_store = _resolve(
            size, encoder, window, anchor_bits, min_match, table_bits, min_store)
        self.ring_size = size
        self.nblocks = size >> BLOCK_SHIFT
        self.block_mask = self.nblocks - 1
        self.ring_mask = size - 1
        self.window = window
        self.anchor_bits = anchor_bits
        self.min_match = min_match
        self.table_bits = table_bits
        self.min_store = min_store
        self.encoder = encoder
        self.own_next = 0
        for i in range(256):
            self.buzw[i] = wo_rotl(BUZ[i], <unsigned> window)
        if encoder:
            self.fp_mask = (1ULL << table_bits) - 1
        if memory is not None:
            self._attach(memory)
            return
        self.ring = <uint8_t*> calloc(size, 1)
        self.stamps = <uint64_t*> calloc(self.nblocks, sizeof(uint64_t))
        if encoder:
            self.fps = <uint64_t*> calloc(1ULL << table_bits, sizeof(uint64_t))
        if self.ring == NULL or self.stamps == NULL or (encoder and self.fps == NULL):
            raise MemoryError("wanopt cache")
        # touch every page now (calloc maps zero pages lazily): no page faults on the packet path
        memset(self.ring, 0, size)
        memset(self.stamps, 0, self.nblocks * sizeof(uint64_t))
        if encoder:
            memset(self.fps, 0, (1ULL << table_bits) * sizeof(uint64_t))

    cdef _attach(self, object memory):
        """Lay the cache out in a shared byte region (a SharedBuffer of cache_bytes(...) bytes):
        control block | stamps | fingerprints | ring. The first user formats the control block with
        this cache's parameters; later users (other workers, other processes) check them."""
        cdef uint8_t[::1] mv
        try:
            mv = memory
        except (TypeError, ValueError, BufferError) as exc:
            raise TypeError(f"memory: expected a writable contiguous byte buffer, got {type(memory).__name__}") from exc
        need = _layout_bytes(self.ring_size, self.encoder, self.table_bits)
        if mv.shape[0] != need:
            raise ValueError(f"memory: needs exactly {need} bytes for these parameters, got {mv.shape[0]}")
        cdef uint8_t* base = &mv[0]
        if (<size_t> base) & 63:
            raise ValueError("memory: must be 64-byte aligned")
        cdef uint64_t* ctl = <uint64_t*> base
        cdef uint64_t want[7]
        want[0] = self.ring_size
        want[1] = self.encoder
        want[2] = self.window
        want[3] = self.anchor_bits
        want[4] = self.min_match
        want[5] = self.table_bits
        want[6] = self.min_store
        cdef uint64_t state = 0
        cdef unsigned rounds = 0
        cdef int k
        # ctl[0]: 0 = blank, 1 = being formatted, 2 = ready; ctl[1..7] parameters; ctl[8] write position
        if wo_cas(&ctl[0], &state, 1):
            for k in range(7):
                ctl[1 + k] = want[k]
            wo_store_release(&ctl[0], 2)
        else:
            while wo_load_acquire(&ctl[0]) != 2:
                rounds += 1
                if rounds > 200000:
                    raise RuntimeError("memory: the cache's shared region was never formatted")
                wo_backoff(rounds)
        have = []
        wanted = []
        for k in range(7):
            have.append(ctl[1 + k])
            wanted.append(want[k])
        if have != wanted:
            raise ValueError(f"memory: this shared cache region was formatted with (size, encoder, window, "
                             f"anchor_bits, min_match, table_bits, min_store) = {tuple(have)}, not {tuple(wanted)}")
        self.next_block = &ctl[8]
        self.stamps = <uint64_t*> (base + 128)
        cdef uint64_t at = 128 + self.nblocks * sizeof(uint64_t)
        if self.encoder:
            self.fps = <uint64_t*> (base + at)
            at += (1ULL << self.table_bits) * sizeof(uint64_t)
        self.ring = base + ((at + 63) & ~(<uint64_t> 63))
        self.memory = memory
        self.memory_view = mv

    def __dealloc__(self):
        if self.memory is None:
            free(self.ring)
            free(self.stamps)
            free(self.fps)

    @property
    def size(self):
        return self.ring_size

    @property
    def write_position(self):
        """Encoder: absolute byte position of the next reservation (64-byte aligned)."""
        return wo_load_relaxed(self.next_block) << BLOCK_SHIFT

    def valid(self, uint64_t position, uint64_t length):
        """True if the cache holds the bytes [position, position + length) of the stream."""
        _ready(self)
        if length == 0:
            return True
        cdef uint64_t b
        for b in range(position >> BLOCK_SHIFT, ((position + length - 1) >> BLOCK_SHIFT) + 1):
            if not self._block_valid(b, 0):
                return False
        return True

    def read(self, uint64_t position, uint64_t length):
        """The bytes [position, position + length) of the stream, or None if not (all) held."""
        _ready(self)
        if length > self.ring_size:
            return None
        buf = bytearray(length)
        cdef uint8_t[::1] view = buf
        cdef bint ok
        if length == 0:
            return bytes(buf)
        with nogil:
            ok = self._read(position, length, &view[0])
        return bytes(buf) if ok else None

    # -- block stamps: stamp = absolute block + 1 when valid; WRITING bit while a writer owns it --
    cdef inline bint _block_valid(self, uint64_t blk, uint64_t owner) noexcept nogil:
        """Block blk holds its bytes (not being written), written by `owner` (0: by anyone)."""
        cdef uint64_t v = wo_load_acquire(&self.stamps[blk & self.block_mask])
        return (v & (WRITING | GEN_MASK)) == blk + 1 and (owner == 0 or (v >> OWNER_SHIFT) == owner)

    cdef bint _recheck(self, uint64_t first_blk, uint64_t last_blk, uint64_t owner) noexcept nogil:
        """Seqlock read-side validation after reading blocks [first_blk, last_blk]."""
        cdef uint64_t b, v
        wo_fence_acquire()
        for b in range(first_blk, last_blk + 1):
            v = wo_load_relaxed(&self.stamps[b & self.block_mask])
            if (v & (WRITING | GEN_MASK)) != b + 1 or (owner != 0 and (v >> OWNER_SHIFT) != owner):
                return False
        return True

    cdef bint _read(self, uint64_t pos, uint64_t n, uint8_t* dst) noexcept nogil:
        cdef uint64_t first = pos >> BLOCK_SHIFT
        cdef uint64_t last = (pos + n - 1) >> BLOCK_SHIFT
        cdef uint64_t b, off, chunk
        if last > MAX_BLOCK:
            return False
        for b in range(first, last + 1):
            if not self._block_valid(b, 0):
                return False
        off = pos & self.ring_mask
        chunk = self.ring_size - off
        if chunk >= n:
            memcpy(dst, self.ring + off, n)
        else:
            memcpy(dst, self.ring + off, chunk)
            memcpy(dst + chunk, self.ring, n - chunk)
        return self._recheck(first, last, 0)

    cdef bint _pending(self, uint64_t pos, uint64_t n) noexcept nogil:
        """True if [pos, pos + n) is not all there yet but none of it was overwritten by a newer
        generation: another worker may still store it."""
        cdef uint64_t b, v, gen
        cdef bint missing = False
        for b in range(pos >> BLOCK_SHIFT, ((pos + n - 1) >> BLOCK_SHIFT) + 1):
            v = wo_load_acquire(&self.stamps[b & self.block_mask])
            gen = v & GEN_MASK
            if gen > b + 1:
                return False
            if gen < b + 1 or (v & WRITING) != 0:
                missing = True
        return missing

    cdef uint64_t _store(self, uint64_t base_blk, const uint8_t* p, uint64_t n, uint64_t owner) noexcept nogil:
        """Write n bytes at absolute block base_blk (zero-padding the last block). Blocks that a newer
        generation (or another writer) already owns are skipped. Returns the blocks written."""
        cdef uint64_t k, blk, slot, want, cur, take, written = 0
        cdef uint64_t nb = (n + BLOCK - 1) >> BLOCK_SHIFT
        cdef uint8_t* dst
        if nb > self.nblocks or base_blk + nb > MAX_BLOCK:
            return 0
        for k in range(nb):
            blk = base_blk + k
            slot = blk & self.block_mask
            want = blk + 1
            cur = wo_load_relaxed(&self.stamps[slot])
            while True:
                if (cur & WRITING) != 0 or (cur & GEN_MASK) >= want:
                    break
                if wo_cas(&self.stamps[slot], &cur, want | WRITING):
                    break
            if (cur & WRITING) != 0 or (cur & GEN_MASK) >= want:
                continue
            dst = self.ring + (slot << BLOCK_SHIFT)
            take = n - (k << BLOCK_SHIFT)
            if take >= BLOCK:
                memcpy(dst, p + (k << BLOCK_SHIFT), BLOCK)
            else:
                memcpy(dst, p + (k << BLOCK_SHIFT), take)
                memset(dst + take, 0, BLOCK - take)
            wo_store_release(&self.stamps[slot], want | (owner << OWNER_SHIFT))
            written += 1
        return written

    def store(self, uint64_t position, const uint8_t[::1] data):
        """Put `data` at absolute position `position` (a multiple of 64); returns blocks written."""
        _ready(self)
        if position & (BLOCK - 1):
            raise ValueError("position: must be a multiple of 64")
        if data.shape[0] == 0:
            return 0
        return self._store(position >> BLOCK_SHIFT, &data[0], data.shape[0], 0)

    # -- encoder: match search --
    cdef int64_t _match(self, const uint8_t* p, uint64_t j, uint64_t lo, uint64_t hi, uint64_t c,
                        uint64_t owner, uint64_t* m_start, uint64_t* m_cache) noexcept nogil:
        """Payload window p[j, j + window) had a fingerprint hit at absolute cache position c.
        Verify it and extend the match left (not below payload index lo) and right (not beyond hi).
        Returns the match length (0 if none) and sets m_start (payload) and m_cache (cache)."""
        cdef uint64_t w = <uint64_t> self.window
        cdef uint64_t blk = c >> BLOCK_SHIFT
        cdef uint64_t lo_blk = blk, hi_blk = blk
        cdef uint64_t max_left = j - lo, max_right = hi - j
        cdef uint64_t vlo, vhi, k, r, lim, off, run, eq
        if (c + w - 1) >> BLOCK_SHIFT > MAX_BLOCK:
            return 0
        if not self._block_valid(blk, owner):
            return 0
        while lo_blk > 0 and c - (lo_blk << BLOCK_SHIFT) < max_left and self._block_valid(lo_blk - 1, owner):
            lo_blk -= 1
        while ((hi_blk + 1) << BLOCK_SHIFT) < c + max_right and hi_blk + 1 - lo_blk < self.nblocks \
                and self._block_valid(hi_blk + 1, owner):
            hi_blk += 1
        vlo = lo_blk << BLOCK_SHIFT
        vhi = (hi_blk + 1) << BLOCK_SHIFT
        if c + w > vhi:
            return 0
        # forward from c (window and right extension), in runs that do not cross the ring's end
        r = 0
        lim = max_right if c + max_right <= vhi else vhi - c
        while r < lim:
            off = (c + r) & self.ring_mask
            run = lim - r
            if run > self.ring_size - off:
                run = self.ring_size - off
            eq = wo_fwd_equal(self.ring + off, p + j + r, run)
            r += eq
            if eq < run:
                break
        if r < w:
            return 0
        # backward from c (left extension)
        k = 0
        lim = max_left if c - vlo >= max_left else c - vlo
        while k < lim:
            off = (c - k - 1) & self.ring_mask   # last byte of this run
            run = lim - k
            if run > off + 1:
                run = off + 1
            eq = wo_bwd_equal(self.ring + off + 1, p + j - k, run)
            k += eq
            if eq < run:
                break
        if not self._recheck((c - k) >> BLOCK_SHIFT, (c + r - 1) >> BLOCK_SHIFT, owner):
            return 0
        m_start[0] = j - k
        m_cache[0] = c - k
        return <int64_t> (k + r)


cdef int _int_arg(object value, str name, object lo, object hi) except -1:
    """TypeError unless value is an int (not a bool); ValueError naming `name` unless lo <= value <= hi."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: must be in [{lo}, {hi}], got {value}")
    return 0


cdef int _ready(Cache cache) except -1:
    if cache.ring == NULL:
        raise ValueError("cache: not initialised")
    return 0


cdef inline void put16(uint8_t* q, uint32_t v) noexcept nogil:
    q[0] = <uint8_t> (v >> 8)
    q[1] = <uint8_t> v

cdef inline void put32(uint8_t* q, uint32_t v) noexcept nogil:
    q[0] = <uint8_t> (v >> 24)
    q[1] = <uint8_t> (v >> 16)
    q[2] = <uint8_t> (v >> 8)
    q[3] = <uint8_t> v

cdef inline uint32_t get16(const uint8_t* q) noexcept nogil:
    return (<uint32_t> q[0] << 8) | q[1]

cdef inline uint32_t get32(const uint8_t* q) noexcept nogil:
    return (<uint32_t> q[0] << 24) | (<uint32_t> q[1] << 16) | (<uint32_t> q[2] << 8) | q[3]


cdef inline uint8_t* put_literals(uint8_t* q, const uint8_t* p, uint64_t n) noexcept nogil:
    cdef uint64_t run
    while n > 0:
        run = MAX_LITERAL if n > MAX_LITERAL else n
        q[0] = <uint8_t> (run - 1)
        memcpy(q + 1, p, run)
        q += run + 1
        p += run
        n -= run
    return q


cdef uint32_t header_crc(const uint8_t* hdr) noexcept nogil:
    """CRC32C over the header without its CRC field (bytes 0-3 and 8-13)."""
    cdef uint32_t crc = crc32c_bytes(hdr, 4, 0)
    return crc32c_bytes(hdr + 8, 6, crc)


cdef inline uint64_t buz_init(const uint8_t* p, uint64_t w) noexcept nogil:
    cdef uint64_t h = 0, k
    for k in range(w):
        h = wo_rotl(h, 1) ^ BUZ[p[k]]
    return h


cdef uint64_t find_anchors(Cache cache, const uint8_t* p, uint64_t L, uint64_t* anc_pos,
                           uint64_t* anc_h) noexcept nogil:
    """Windows p[j, j + window) whose Buzhash has its low anchor_bits bits zero, in order: their start
    positions and hashes (arrays of at least L entries). Returns how many.

    Branch-free (every window is written; the count advances only on anchors, a coin flip for a
    branch predictor), and two independent hash chains (first and second half of the windows)
    interleaved so that their rotate/xor latencies overlap."""
    cdef uint64_t w = <uint64_t> cache.window
    cdef uint64_t amask = (1ULL << cache.anchor_bits) - 1
    cdef const uint64_t* buzw = cache.buzw
    cdef uint64_t nwin, M, k, na = 0, nb = 0, ha, hb, j
    if L < w:
        return 0
    nwin = L - w + 1
    M = nwin >> 1
    if M < 16:
        ha = buz_init(p, w)
        for j in range(nwin):
            anc_pos[na] = j
            anc_h[na] = ha
            na += <uint64_t> ((ha & amask) == 0)
            if j + 1 < nwin:
                ha = wo_rotl(ha, 1) ^ buzw[p[j]] ^ BUZ[p[j + w]]
        return na
    # chain A: windows [0, M); chain B: windows [M, nwin), written from index M on, moved down after
    ha = buz_init(p, w)
    hb = buz_init(p + M, w)
    for k in range(M):
        anc_pos[na] = k
        anc_h[na] = ha
        na += <uint64_t> ((ha & amask) == 0)
        anc_pos[M + nb] = M + k
        anc_h[M + nb] = hb
        nb += <uint64_t> ((hb & amask) == 0)
        if k + 1 < M:
            ha = wo_rotl(ha, 1) ^ buzw[p[k]] ^ BUZ[p[k + w]]
            hb = wo_rotl(hb, 1) ^ buzw[p[M + k]] ^ BUZ[p[M + k + w]]
    j = 2 * M
    if j < nwin:   # an odd number of windows: B has one more
        hb = wo_rotl(hb, 1) ^ buzw[p[j - 1]] ^ BUZ[p[j - 1 + w]]
        anc_pos[M + nb] = j
        anc_h[M + nb] = hb
        nb += <uint64_t> ((hb & amask) == 0)
    if nb and na < M:
        memmove(anc_pos + na, anc_pos + M, nb * sizeof(uint64_t))
        memmove(anc_h + na, anc_h + M, nb * sizeof(uint64_t))
    return na + nb


def anchor_positions(Cache cache, const uint8_t[::1] data):
    """Start positions of the anchors of `data` as the encoder finds them (for tests)."""
    _ready(cache)
    cdef uint64_t L = data.shape[0], n
    cdef vector[uint64_t] pos, hs
    if L == 0:
        return []
    pos.resize(L + 1)
    hs.resize(L + 1)
    with nogil:
        n = find_anchors(cache, &data[0], L, pos.data(), hs.data())
    return [(pos[k], hs[k]) for k in range(n)]


cdef uint64_t encode_payload(Cache cache, const uint8_t* p, uint64_t L, uint8_t* out, uint64_t owner,
                             uint64_t* anc_pos, uint64_t* anc_h, uint64_t* counters) noexcept nogil:
    """Encode payload p[0, L) into out (room for encoded_bound(L) bytes). Returns the encoded length."""
    cdef uint64_t w = <uint64_t> cache.window
    cdef uint64_t amask = (1ULL << cache.anchor_bits) - 1
    cdef unsigned tshift = 64 - cache.table_bits
    cdef uint64_t nanc = 0, j, h = 0, e, c, covered = 0, mlen, m_start = 0, m_cache = 0, nb
    cdef uint64_t base_blk, base_abs, idx, tag, last
    cdef const uint64_t* buzw = cache.buzw
    cdef int64_t delta, got
    cdef bint stored = L >= <uint64_t> cache.min_store
    cdef uint8_t* q = out + HEADER_LEN
    cdef uint32_t crc

    # 1. content-defined anchors, then prefetch every anchor's fingerprint slot before looking any
    #    up (the cache misses overlap)
    nanc = find_anchors(cache, p, L, anc_pos, anc_h)
    for j in range(nanc):
        wo_prefetch(&cache.fps[(anc_h[j] >> tshift) & cache.fp_mask])

    # 2. reserve this payload's cache region (every worker thread shares the write position)
    if stored:
        nb = (L + BLOCK - 1) >> BLOCK_SHIFT
        base_blk = wo_fetch_add(cache.next_block, nb)
    else:
        base_blk = wo_load_relaxed(cache.next_block)
    base_abs = base_blk << BLOCK_SHIFT

    # 3. look every anchor up; verify and extend hits; emit literals and shims
    for j in range(nanc):
        if anc_pos[j] < covered:
            continue
        idx = anc_h[j] >> tshift
        tag = (anc_h[j] >> 16) & 0xFFFF
        e = wo_load_relaxed(&cache.fps[idx & cache.fp_mask])
        if e == 0 or (e & 0xFFFF) != tag:
            continue
        c = (e >> 16) - 1
        got = cache._match(p, anc_pos[j], covered, L, c, owner, &m_start, &m_cache)
        if got < cache.min_match:
            continue
        delta = <int64_t> m_cache - <int64_t> base_abs
        if delta < -2147483647 or delta > 2147483647:
            continue
        mlen = <uint64_t> got
        q = put_literals(q, p + covered, m_start - covered)
        q[0] = SHIM_TAG
        put16(q + 1, <uint32_t> mlen)
        put32(q + 3, <uint32_t> (<int64_t> delta))
        q += SHIM_LEN
        covered = m_start + mlen
        counters[E_SHIMS] += 1
        counters[E_MATCHED] += mlen
    q = put_literals(q, p + covered, L - covered)

    # 4. header (CRC32C over the header fields and the original payload)
    out[0] = MAGIC
    out[1] = (VERSION << 4) | (FLAG_STORED if stored else 0)
    put16(out + 2, <uint32_t> L)
    out[8] = <uint8_t> (base_blk >> 40)
    out[9] = <uint8_t> (base_blk >> 32)
    put32(out + 10, <uint32_t> base_blk)
    crc = crc32c_bytes(p, L, header_crc(out))
    put32(out + 4, crc)

    # 5. store the payload at its reserved position, then publish its anchors
    if stored:
        cache._store(base_blk, p, L, owner)
        counters[E_STORED] += 1
        for j in range(nanc):
            idx = anc_h[j] >> tshift
            tag = (anc_h[j] >> 16) & 0xFFFF
            wo_store_relaxed(&cache.fps[idx & cache.fp_mask], ((base_abs + anc_pos[j] + 1) << 16) | tag)
    return <uint64_t> (q - out)


cdef inline uint64_t encoded_bound(uint64_t L) noexcept nogil:
    return HEADER_LEN + L + L // MAX_LITERAL + 2


cdef int decode_payload(Cache cache, const uint8_t* q, uint64_t n, uint8_t* out, uint64_t room,
                        uint64_t* out_len, uint64_t* counters, uint64_t* budget_ns) noexcept nogil:
    """Decode n encoded bytes into out (room bytes available). Returns 0 or a D_FAIL_* counter index."""
    cdef uint64_t L, o = 0, i = HEADER_LEN, run, mlen, base_blk
    cdef int64_t ref
    cdef uint32_t crc
    cdef uint8_t tag
    cdef uint64_t shims = 0, t0, t1
    cdef unsigned spins
    cdef bint waited = False
    if n < HEADER_LEN:
        return D_FAIL_TRUNCATED
    if q[0] != MAGIC:
        return D_FAIL_MAGIC
    if (q[1] >> 4) != VERSION or (q[1] & 0x0F & ~FLAG_STORED) != 0:
        return D_FAIL_VERSION
    L = get16(q + 2)
    if L == 0 or L > room:
        return D_FAIL_LENGTH
    base_blk = (<uint64_t> q[8] << 40) | (<uint64_t> q[9] << 32) | get32(q + 10)
    while i < n:
        tag = q[i]
        if tag < SHIM_TAG:
            run = <uint64_t> tag + 1
            if i + 1 + run > n:
                return D_FAIL_TRUNCATED
            if o + run > L:
                return D_FAIL_LENGTH
            memcpy(out + o, q + i + 1, run)
            o += run
            i += run + 1
        elif tag == SHIM_TAG:
            if i + SHIM_LEN > n:
                return D_FAIL_TRUNCATED
            mlen = get16(q + i + 1)
            if mlen == 0:
                return D_FAIL_RECORD
            if o + mlen > L:
                return D_FAIL_LENGTH
            ref = <int64_t> (base_blk << BLOCK_SHIFT) + <int64_t> (<int32_t> get32(q + i + 3))
            if ref < 0 or mlen > cache.ring_size or ref + <int64_t> mlen > <int64_t> (GEN_MASK << BLOCK_SHIFT):
                return D_FAIL_MISSING
            if not cache._read(<uint64_t> ref, mlen, out + o):
                # not there yet (another worker may be storing it): wait within the batch's budget
                if budget_ns[0] == 0:
                    return D_FAIL_MISSING
                if not cache._pending(<uint64_t> ref, mlen):
                    # overwritten, or its store completed between the read and this look: read again
                    if not cache._read(<uint64_t> ref, mlen, out + o):
                        return D_FAIL_MISSING
                else:
                    t0 = wo_now_ns()
                    spins = 0
                    while True:
                        wo_backoff(spins)
                        spins += 1
                        if cache._read(<uint64_t> ref, mlen, out + o):
                            waited = True
                            break
                        t1 = wo_now_ns()
                        if t1 - t0 >= budget_ns[0]:
                            break
                        if not cache._pending(<uint64_t> ref, mlen):
                            waited = cache._read(<uint64_t> ref, mlen, out + o)  # completed meanwhile?
                            break
                    t1 = wo_now_ns()
                    counters[D_WAIT_NS] += t1 - t0
                    budget_ns[0] = 0 if t1 - t0 >= budget_ns[0] else budget_ns[0] - (t1 - t0)
                    if not waited:
                        return D_FAIL_MISSING
                    counters[D_WAITED] += 1
                    waited = False
            o += mlen
            i += SHIM_LEN
            shims += 1
        else:
            return D_FAIL_RECORD
    if o != L:
        return D_FAIL_LENGTH
    crc = crc32c_bytes(out, L, header_crc(q))
    if crc != get32(q + 4):
        return D_FAIL_CRC
    if q[1] & FLAG_STORED:
        cache._store(base_blk, out, L, 0)
        counters[D_STORED] += 1
    counters[D_SHIMS] += shims
    out_len[0] = L
    return 0


cdef inline bint l4_payload(PacketBatch* b, size_t i, uint8_t* proto_out, uint32_t* pay_off,
                            uint32_t* pay_end) noexcept nogil:
    """Locate the TCP/UDP payload of packet i of a parsed batch: [pay_off, pay_end) within the frame.
    False if the packet is not a non-fragmented IPv4/IPv6 TCP/UDP packet with consistent columns."""
    cdef uint32_t flen = b.offsets[i + 1] - b.offsets[i]
    cdef const uint8_t* f = b.data.data() + b.offsets[i]
    cdef uint32_t l3 = b.l3_offset[i], l4 = b.l4_offset[i], l4len = b.l4_len[i], hl
    cdef uint8_t proto = b.key[i].proto, ver
    if b.drop[i] != 0 or (b.flags[i] & kFlagHasL4) == 0 or (b.flags[i] & kFlagFragment) != 0:
        return False
    if proto != 6 and proto != 17:
        return False
    if l3 >= flen:
        return False
    ver = f[l3] >> 4
    if ver == 4:
        if l3 + 20 > l4 or l3 + <uint32_t> (f[l3] & 0x0F) * 4 > l4:
            return False
    elif ver == 6:
        if l3 + 40 > l4:
            return False
    else:
        return False
    if l4 + l4len > flen:
        return False
    if proto == 6:
        if l4len < 20:
            return False
        hl = <uint32_t> (f[l4 + 12] >> 4) * 4
        if hl < 20 or hl > l4len:
            return False
    else:
        if l4len < 8:
            return False
        hl = 8
    proto_out[0] = proto
    pay_off[0] = l4 + hl
    pay_end[0] = l4 + l4len
    return True


cdef bint fix_headers(uint8_t* f, uint32_t l3, uint32_t l4, uint32_t old_l4len, uint32_t new_l4len,
                      uint8_t proto) noexcept nogil:
    """Adjust IP/UDP lengths for an L4 segment that went from old_l4len to new_l4len bytes and recompute
    the IPv4 header and TCP/UDP checksums in full. False (nothing sensible written) if a length overflows."""
    cdef int64_t delta = <int64_t> new_l4len - <int64_t> old_l4len
    cdef int64_t tot
    cdef uint32_t ihl
    cdef uint16_t cs
    cdef bint v6 = (f[l3] >> 4) == 6
    cdef int cpos = 16 if proto == 6 else 6
    if new_l4len > 65535:
        return False
    if (f[l3] >> 4) == 4:
        tot = <int64_t> get16(f + l3 + 2) + delta
        if tot < 20 or tot > 65535:
            return False
        put16(f + l3 + 2, <uint32_t> tot)
        ihl = <uint32_t> (f[l3] & 0x0F) * 4
        put16(f + l3 + 10, wo_ipv4_checksum(f + l3, ihl))
    else:
        tot = <int64_t> get16(f + l3 + 4) + delta
        if tot < 0 or tot > 65535:
            return False
        put16(f + l3 + 4, <uint32_t> tot)
    if proto == 17:
        put16(f + l4 + 4, new_l4len)
        if (f[l3] >> 4) == 4 and f[l4 + 6] == 0 and f[l4 + 7] == 0:
            return True        # UDP over IPv4 without a checksum stays without one
    if v6:
        cs = wo_l4_checksum(f + l3 + 8, f + l3 + 24, True, proto, f + l4, new_l4len)
    else:
        cs = wo_l4_checksum(f + l3 + 12, f + l3 + 16, False, proto, f + l4, new_l4len)
    if proto == 17 and cs == 0:
        cs = 0xFFFF
    put16(f + l4 + cpos, cs)
    return True


def encode_batch(Cache cache, object batch, object out_port, Stats stats, object owner=0):
    """Encode every TCP/UDP payload of a parsed batch in place (the batch's data buffer is rebuilt).

    Packets without a TCP/UDP payload pass unchanged; packets already dropped stay dropped. Every
    other packet gets port `out_port`, or port 0 and drop OTHER if the encoded packet would not fit.
    `owner` (1..32767, e.g. queue + 1) tags the cache regions this call stores and restricts its
    matches to regions with the same tag; 0 shares everything."""
    _ready(cache)
    if not cache.encoder:
        raise ValueError("cache: an encoder needs an encoder cache")
    _int_arg(out_port, "out_port", 0, 65535)
    _int_arg(owner, "owner", 0, MAX_OWNER)
    cdef uint16_t port = out_port
    cdef uint64_t own = owner
    cdef PacketBatch* b = batch_from_object(batch)
    cdef size_t n = 0, i
    cdef uint64_t bound = 0, o = 0, flen, elen, L, max_pay = 0
    cdef uint32_t pay_off = 0, pay_end = 0
    cdef uint8_t proto = 0
    cdef vector[uint8_t] out
    cdef vector[uint32_t] offs
    cdef vector[uint64_t] anc_pos, anc_h
    cdef const uint8_t* f
    cdef uint8_t* g
    cdef uint64_t* ctr = stats.c
    _use_begin(b, stats)
    n = b.size()
    try:
        for i in range(n):
            flen = b.offsets[i + 1] - b.offsets[i]
            bound += encoded_bound(flen) + 8
            if flen > max_pay:
                max_pay = flen
        with nogil:
            out.resize(bound)
            offs.resize(n + 1)
            anc_pos.resize(max_pay + 1)
            anc_h.resize(max_pay + 1)
            offs[0] = 0
            for i in range(n):
                f = b.data.data() + b.offsets[i]
                flen = b.offsets[i + 1] - b.offsets[i]
                g = out.data() + o
                if not l4_payload(b, i, &proto, &pay_off, &pay_end) or pay_end == pay_off:
                    memcpy(g, f, flen)
                    o += flen
                    offs[i + 1] = <uint32_t> o
                    if b.drop[i] == 0:
                        b.port[i] = port
                        ctr[E_PASS] += 1
                    continue
                L = pay_end - pay_off
                memcpy(g, f, pay_off)
                elen = encode_payload(cache, f + pay_off, L, g + pay_off, own, anc_pos.data(),
                                      anc_h.data(), ctr)
                memcpy(g + pay_off + elen, f + pay_end, flen - pay_end)
                if not fix_headers(g, b.l3_offset[i], b.l4_offset[i], b.l4_len[i],
                                   <uint32_t> (pay_off - b.l4_offset[i] + elen), proto):
                    memcpy(g, f, flen)
                    o += flen
                    offs[i + 1] = <uint32_t> o
                    b.port[i] = 0
                    b.drop[i] = <uint8_t> DropReason.kOther
                    ctr[E_TOO_BIG] += 1
                    continue
                b.l4_len[i] = <uint16_t> (pay_off - b.l4_offset[i] + elen)
                o += flen - L + elen
                offs[i + 1] = <uint32_t> o
                b.port[i] = port
                ctr[E_PACKETS] += 1
                ctr[E_BYTES_IN] += L
                ctr[E_BYTES_OUT] += elen
            out.resize(o)
            b.data.swap(out)
            b.offsets.swap(offs)
    finally:
        _use_end(b, stats)


def decode_batch(Cache cache, object batch, object out_port, Stats stats, object wait_ns=0):
    """Decode every encoded TCP/UDP payload of a parsed batch in place (the data buffer is rebuilt).

    Packets without a TCP/UDP payload pass unchanged. A payload that does not decode (not in the
    encoded format, damaged, or referencing bytes this cache lacks) leaves the packet unchanged with
    port 0 and drop OTHER, counted under its fail_* reason. A shim whose bytes are not stored yet
    (but not overwritten) waits for another worker to store them, up to `wait_ns` in all per call."""
    _ready(cache)
    if cache.encoder:
        raise ValueError("cache: a decoder needs a decoder cache")
    _int_arg(out_port, "out_port", 0, 65535)
    _int_arg(wait_ns, "wait_ns", 0, MAX_WAIT_NS)
    cdef uint16_t port = out_port
    cdef uint64_t budget = wait_ns
    cdef PacketBatch* b = batch_from_object(batch)
    cdef size_t n = 0, i
    cdef uint64_t bound = 0, o = 0, flen, L = 0, dl = 0, en, room
    cdef uint32_t pay_off = 0, pay_end = 0
    cdef uint8_t proto = 0
    cdef int rc
    cdef vector[uint8_t] out
    cdef vector[uint32_t] offs
    cdef const uint8_t* f
    cdef uint8_t* g
    cdef uint64_t* ctr = stats.c
    _use_begin(b, stats)
    n = b.size()
    try:
        for i in range(n):
            flen = b.offsets[i + 1] - b.offsets[i]
            bound += flen
            if l4_payload(b, i, &proto, &pay_off, &pay_end) and pay_end - pay_off >= HEADER_LEN:
                bound += get16(b.data.data() + b.offsets[i] + pay_off + 2)
        with nogil:
            out.resize(bound)
            offs.resize(n + 1)
            offs[0] = 0
            for i in range(n):
                f = b.data.data() + b.offsets[i]
                flen = b.offsets[i + 1] - b.offsets[i]
                g = out.data() + o
                if not l4_payload(b, i, &proto, &pay_off, &pay_end) or pay_end == pay_off:
                    memcpy(g, f, flen)
                    o += flen
                    offs[i + 1] = <uint32_t> o
                    if b.drop[i] == 0:
                        b.port[i] = port
                        ctr[D_PASS] += 1
                    continue
                en = pay_end - pay_off
                memcpy(g, f, pay_off)
                room = get16(f + pay_off + 2) if en >= HEADER_LEN else 0
                rc = decode_payload(cache, f + pay_off, en, g + pay_off, room, &dl, ctr, &budget)
                if rc == 0:
                    memcpy(g + pay_off + dl, f + pay_end, flen - pay_end)
                    if not fix_headers(g, b.l3_offset[i], b.l4_offset[i], b.l4_len[i],
                                       <uint32_t> (pay_off - b.l4_offset[i] + dl), proto):
                        rc = D_FAIL_TOO_BIG
                if rc != 0:
                    memcpy(g, f, flen)
                    o += flen
                    offs[i + 1] = <uint32_t> o
                    b.port[i] = 0
                    b.drop[i] = <uint8_t> DropReason.kOther
                    ctr[rc] += 1
                    continue
                b.l4_len[i] = <uint16_t> (pay_off - b.l4_offset[i] + dl)
                o += flen - en + dl
                offs[i + 1] = <uint32_t> o
                b.port[i] = port
                ctr[D_PACKETS] += 1
                ctr[D_BYTES_IN] += en
                ctr[D_BYTES_OUT] += dl
            out.resize(o)
            b.data.swap(out)
            b.offsets.swap(offs)
    finally:
        _use_end(b, stats)


def encode_payload_bytes(Cache cache, const uint8_t[::1] payload, object owner=0):
    """Encode one payload (bytes) against the cache, storing it; for tests and the Python API."""
    _ready(cache)
    if not cache.encoder:
        raise ValueError("cache: an encoder needs an encoder cache")
    cdef uint64_t L = payload.shape[0]
    if L == 0 or L > 65535:
        raise ValueError("payload: length must be in [1, 65535]")
    _int_arg(owner, "owner", 0, MAX_OWNER)
    cdef uint64_t own = owner
    cdef vector[uint8_t] out
    cdef vector[uint64_t] anc_pos, anc_h
    cdef uint64_t counters[16]
    cdef uint64_t elen
    memset(counters, 0, sizeof(counters))
    out.resize(encoded_bound(L))
    anc_pos.resize(L + 1)
    anc_h.resize(L + 1)
    with nogil:
        elen = encode_payload(cache, &payload[0], L, out.data(), own, anc_pos.data(), anc_h.data(),
                              counters)
    return bytes((<char*> out.data())[:elen])


def decode_payload_bytes(Cache cache, const uint8_t[::1] encoded, object wait_ns=0):
    """Decode one encoded payload; returns (payload bytes or None, failure name or None)."""
    _ready(cache)
    if cache.encoder:
        raise ValueError("cache: a decoder needs a decoder cache")
    _int_arg(wait_ns, "wait_ns", 0, MAX_WAIT_NS)
    cdef uint64_t budget = wait_ns
    cdef vector[uint8_t] out
    cdef uint64_t counters[16]
    cdef uint64_t dl = 0
    cdef int rc
    memset(counters, 0, sizeof(counters))
    out.resize(65536)
    if encoded.shape[0] == 0:
        return None, DECODER_STATS[D_FAIL_TRUNCATED]
    with nogil:
        rc = decode_payload(cache, &encoded[0], encoded.shape[0], out.data(), 65535, &dl, counters, &budget)
    if rc != 0:
        return None, DECODER_STATS[rc]
    return bytes((<char*> out.data())[:dl]), None
