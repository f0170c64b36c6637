// Generic batch primitives for gateway-style VNFs (NATs, firewalls), used from Python.
//
// They hold no VNF logic: split_gateway sorts packets by where they come from and go to (an inside
// prefix and one outside address), touch_deadlines is an idle timer over caller-owned records.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::nfs {

// Index lists returned by split_gateway (counts of each list).
struct SplitCounts {
  std::size_t outbound = 0;  // IPv4, src in the inside prefix, dst outside it and != addr
  std::size_t inbound = 0;   // IPv4, dst == addr, src outside the inside prefix
  std::size_t other = 0;     // IPv4 packets that are neither, and non-first IPv4 fragments
  std::size_t not_v4 = 0;    // not dropped, family != 4 (IPv6, unparsed)
  std::size_t outbound_np = 0;  // with ports_only: outbound packets that are not TCP/UDP
  std::size_t inbound_np = 0;   // with ports_only: inbound packets that are not TCP/UDP
};

struct SplitOutput {
  std::uint32_t* src;          // n entries each
  std::uint32_t* dst;
  std::uint32_t* outbound;
  std::uint32_t* inbound;
  std::uint32_t* other;
  std::uint32_t* not_v4;
  std::uint32_t* outbound_np;
  std::uint32_t* inbound_np;
};

// One pass over a parsed batch. For every packet i with drop == 0: src[i] / dst[i] = its IPv4
// addresses in host order (0 when not IPv4), and i is appended to exactly one list (see
// SplitCounts; with ports_only, outbound / inbound packets whose protocol is not TCP or UDP go to
// outbound_np / inbound_np instead). Packets with drop != 0 get src = dst = 0 and appear in no list.
// The batch's port column is set too: out_port for the outbound list, in_port for the inbound
// list, 0 for every other packet (the VNF then drops or re-routes as it decides).
// Throws std::invalid_argument if the batch's columns are inconsistent.
SplitCounts split_gateway(packet::PacketBatch& batch, std::uint32_t inside_net, std::uint32_t inside_mask,
                          std::uint32_t addr, std::uint16_t out_port, std::uint16_t in_port, bool ports_only,
                          const SplitOutput& out);

// An idle timer over records owned by the caller: `records` holds n_records records of
// record_size bytes, each with a uint64 deadline at deadline_offset and a uint64 timeout at
// timeout_offset (native endianness). For j = 0..n-1 in order: r = record slots[j]; if
// (flags[j] & close_mask) != 0 then r.timeout = min(r.timeout, close_timeout); old[j] = r.deadline;
// r.deadline = ts[j] + r.timeout. Because the updates happen in order, a record touched twice in
// one call reports its pre-call deadline only for its first touch. flags may be null (no close).
// Throws std::invalid_argument (before touching anything) if a slot is out of range or the fields
// do not fit in a record.
void touch_deadlines(std::uint8_t* records, std::size_t n_records, std::size_t record_size,
                     std::size_t deadline_offset, std::size_t timeout_offset, const std::uint32_t* slots,
                     const std::uint64_t* ts, const std::uint8_t* flags, std::size_t n, std::uint8_t close_mask,
                     std::uint64_t close_timeout, std::uint64_t* old);

// The same timer driven straight from a batch: touch j uses packet indices[j]'s ts_ns and
// tcp_flags. expired[j] = 1 if the record's deadline before that touch was non-zero and <= the
// packet's time (the mapping had expired), else 0. Returns how many touches found it expired.
// Throws std::invalid_argument (before touching anything) for an index or slot out of range or
// fields that do not fit.
std::size_t touch_deadlines_at(std::uint8_t* records, std::size_t n_records, std::size_t record_size,
                               std::size_t deadline_offset, std::size_t timeout_offset, const std::uint32_t* slots,
                               const packet::PacketBatch& batch, const std::uint32_t* indices, std::size_t n,
                               std::uint8_t close_mask, std::uint64_t close_timeout, std::uint8_t* expired);

}  // namespace vnfkit::nfs
