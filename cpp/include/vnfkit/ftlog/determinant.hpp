// Determinants: the records of non-deterministic events (shared-state accesses, clock reads,
// random draws) that let a backup replay a worker's execution exactly (FTMB-style recovery).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace vnfkit::ftlog {

// What kind of access a determinant records.
enum class Op : std::uint8_t {
  kNone = 0,
  kCounterAdd = 1,     // slot = counter slot, value = post-add value
  kCounterRead = 2,    // slot = counter slot, value = value read
  kBucketConsume = 3,  // slot = bucket, value = theoretical arrival time observed, flags bit0 = allowed
  kPoolAlloc = 4,      // slot = port (0 = exhausted), value = port generation observed
  kPoolRelease = 5,    // slot = port, value = generation observed, flags bit0 = released
  kRegLoad = 6,        // slot = register, value = packed (version << 32 | value) observed
  kRegStore = 7,
  kRegExchange = 8,
  kRegAdd = 9,
  kRegCas = 10,
  kClock = 11,         // object = kContextObject, value = nanoseconds returned
  kRandom = 12,        // object = kContextObject, value = random u64 returned
};

const char* op_name(Op op) noexcept;

// The object id used for per-context events (clock reads and random draws).
inline constexpr std::uint16_t kContextObject = 0xFFFF;

// One logged access: 24 bytes, written with a plain store into a per-thread append-only log.
struct Determinant {
  std::uint64_t packet_id;
  std::uint16_t object;  // index of the shared object in its SharedState (kContextObject: ctx)
  Op op;
  std::uint8_t flags;    // op-specific outcome bits
  std::uint32_t slot;    // slot / key index / port inside the object
  std::uint64_t value;   // outcome (returned value, or version / generation observed)
};
static_assert(sizeof(Determinant) == 24);

// The replaying execution asked for something the log does not contain (different packet,
// variable, order, outcome), or the log itself is damaged (CRC, truncation, gaps).
class DivergenceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A framed log chunk failed to parse (bad magic, truncated, CRC mismatch): a divergence too.
class LogFormatError : public DivergenceError {
 public:
  using DivergenceError::DivergenceError;
};

}  // namespace vnfkit::ftlog
