// Generic batch primitives for gateway-style VNFs (NATs, firewalls), used from Python.
//
// split_gateway sorts packets by where they come from and go to (an inside prefix and one outside
// address), touch_deadlines is an idle timer over caller-owned records. nat_fast_path is the NAT's
// per-packet common case in one call: look up, refresh, rewrite; everything else is handed back.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "vnfkit/classify/toeplitz.hpp"
#include "vnfkit/flow/flow_table.hpp"
#include "vnfkit/packet/batch.hpp"
#include "vnfkit/state/port_pool.hpp"

namespace vnfkit::nfs {

// Index lists returned by split_gateway (counts of each list).
struct SplitCounts {
  std::size_t outbound = 0;  // IPv4, src in the inside prefix, dst outside it and != addr
  std::size_t inbound = 0;   // IPv4, dst == addr, src outside the inside prefix
  std::size_t other = 0;     // IPv4 packets that are neither, and non-first IPv4 fragments
  std::size_t not_v4 = 0;    // not dropped, family != 4 (IPv6, unparsed)
  std::size_t outbound_np = 0;  // with ports_only: outbound packets that are not TCP/UDP
  std::size_t inbound_np = 0;   // with ports_only: inbound packets that are not TCP/UDP
  std::uint64_t min_ts = UINT64_MAX;  // smallest ts_ns of the batch (every packet; MAX if empty)
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

// The per-mapping record a NAT keeps as the value of its outbound FlowTable (32 bytes; the Python
// side declares the same layout as a numpy dtype). deadline 0 = just inserted, no port yet.
struct NatRecord {
  std::uint64_t deadline;  // packet time at which the mapping expires
  std::uint64_t timeout;   // idle timeout (ns); lowered to the close timeout after FIN/RST
  std::uint32_t int_addr;  // internal address and port, what replies are translated back to
  std::uint32_t in_slot;   // slot of the reply entry in the reply table
  std::uint16_t nat_port;  // public port (or ICMP id)
  std::uint16_t int_port;
  std::uint8_t proto;
  std::uint8_t pad[3];
};
static_assert(sizeof(NatRecord) == 32);

struct NatFastConfig {
  std::uint32_t public_addr = 0;      // host order
  std::uint8_t close_mask = 0x05;     // TCP flags that switch a mapping to close_timeout (FIN|RST)
  std::uint64_t close_timeout = 0;
  const std::uint8_t* fwd_rev = nullptr;  // 65536 flags by source port: outbound from a forward's
                                          // server port (null: no forwards)
  const std::uint8_t* fwd_in = nullptr;   // 65536 flags by destination port: inbound to a forward
  // New TCP/UDP mappings in the call (null pools: new flows are deferred): one port per new flow
  // from the protocol's pool (sub-pool 0), allocated through `ctx` (logged / forced like any
  // shared access), in packet order, TCP before UDP.
  state::PortPool* tcp_pool = nullptr;
  state::PortPool* udp_pool = nullptr;
  state::Context* ctx = nullptr;
  std::uint64_t tcp_timeout = 0;
  std::uint64_t udp_timeout = 0;
  // Per-queue shares (num_queues > 1): this queue allocates from sub-pool g * num_queues + queue
  // of the sub-pool g it wants (g = 0 without affinity).
  std::uint16_t num_queues = 1;
  std::uint16_t queue = 0;
  // RSS affinity (toeplitz non-null): a new flow with RSS hash h towards remote:rport wants a
  // sub-pool g = cand[(start + r) % ncand] ^ base, base = toeplitz(remote, public, rport, 0) &
  // reta_mask, start = (h >> 8) % ncand, for r = 0, 1, ... (one pool call per round, over the
  // flows still without a port, in packet order) until it gets a port; ncand == 0: no port, no
  // call. The caller guarantees every sub-pool index this can ask for exists.
  const classify::Toeplitz* toeplitz = nullptr;
  const std::uint32_t* cand = nullptr;
  std::size_t ncand = 0;
  std::uint32_t reta_mask = 0;
};

// Caller-owned buffers: deferred lists (n_out / n_in entries) and one mark byte per outbound slot
// (out.capacity() entries, all zero on entry; left all zero).
struct NatFastBuffers {
  std::uint32_t* out_idx;   // deferred outbound packets, in packet order
  std::uint32_t* out_slot;  // ... their outbound slot (kNoSlot: table full)
  std::uint8_t* out_new;    // ... 1 for the packet that inserted a new flow
  std::uint32_t* in_idx;    // deferred inbound packets, in packet order
  std::uint8_t* mark;
  // Optional (null: unused) GC index, out.capacity() bytes: set to 1 for every record whose
  // deadline goes from 0 to non-zero here (see nat_expired).
  std::uint8_t* armed = nullptr;
};

struct NatFastResult {
  bool bailed = false;           // an outbound packet came from a forward's server port: nothing done
  bool out_expired = false;      // an outbound mapping had expired: every packet deferred
  bool in_expired = false;       // an inbound mapping had expired: every inbound packet deferred
  std::size_t out_deferred = 0;
  std::size_t in_deferred = 0;
  std::size_t translated = 0;
  std::size_t reverse_translated = 0;
  std::size_t new_mappings = 0;      // with pools: flows that got a port
  std::size_t pool_exhausted = 0;    // ... flows that found their pool empty (forgotten again)
  std::size_t drop_exhausted = 0;    // ... their packets, dropped (kPoolExhausted)
  std::size_t drop_table_full = 0;   // ... packets that found the outbound table full (kTableFull)
};

// The NAT's common case for the outbound list `oidx` and the inbound list `iidx` of split_gateway,
// with exactly the decisions of doing it step by step (outbound before inbound; a mapping is
// refreshed by each packet in order: FIN/RST lowers its timeout to close_timeout, deadline = packet
// time + timeout; it had expired for a packet at or past its deadline):
//  1. If any outbound packet's source port is flagged in fwd_rev: bailed, nothing touched.
//  2. Outbound: lookup_or_insert in `out` (the batch's keys, flow ids and times). Packets of a flow
//     inserted by this call, and packets that found the table full, are deferred (row, slot and
//     is_new appended to the buffers); the others refresh their record and get their source
//     rewritten to (public_addr, nat_port). If a refresh finds an expired mapping, every refresh of
//     this step is undone, every outbound packet is deferred (with its slot and is_new, the
//     inserts stay) and so is every inbound packet: out_expired.
//     With pools (and no expired mapping), the deferred packets are then decided here: table full
//     -> dropped; each new flow gets a port (record filled: port, protocol, timeout, internal
//     address and port; its reply key inserted in `in`), or, if its pool is empty, is removed
//     again and its packets dropped; the new flows' packets refresh and are rewritten in order.
//  3. Inbound (unless out_expired): packets to a port flagged in fwd_in and reply-table misses
//     are deferred; hits refresh their outbound record and get their destination rewritten to
//     (int_addr, int_port). If a refresh finds an expired mapping, every refresh and rewrite of this
//     step is undone (rewrites happen only after every refresh succeeded) and every inbound packet
//     is deferred: in_expired.
// Deferred packets keep split_gateway's preset output port; the caller decides them, outbound first.
// `out`'s values must be NatRecords and `in`'s uint32 outbound slots.
// Throws std::invalid_argument (before touching anything) for bad value sizes or rows.
NatFastResult nat_fast_path(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                            const std::uint32_t* oidx, std::size_t n_out, const std::uint32_t* iidx, std::size_t n_in,
                            const NatFastConfig& cfg, const NatFastBuffers& buf);

// split_gateway's output buffers, owned by a caller that splits batch after batch (grown to the
// largest batch seen, then reused: no allocation per batch in steady state).
struct SplitScratch {
  std::vector<std::uint32_t> src, dst, outbound, inbound, other, not_v4, outbound_np, inbound_np;
  SplitOutput reserve(std::size_t n);
};

// split_gateway (ports_only, addr = cfg.public_addr) and nat_fast_path in one call, for the common
// batch: if the split finds only TCP/UDP outbound and inbound packets (no other IPv4, non-IPv4,
// fragment or other-protocol packet) and the batch's earliest packet time is below gc_at (no
// expiry scan due), the result is nat_fast_path's on the split's lists. Otherwise, or if
// nat_fast_path bailed (a forward's server port), `general` is set and nothing but the split's
// port presets has been done: the caller takes its general path (which splits again). If the only
// reason was the expiry scan (every packet TCP/UDP outbound or inbound, min_ts >= gc_at), gc_due is
// set too and min_ts is the batch's earliest packet time: the caller may run its scan and call again.
struct NatBatchResult {
  bool general = false;
  bool gc_due = false;
  std::uint64_t min_ts = 0;
  NatFastResult fast;
};
NatBatchResult nat_fast_batch(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                              std::uint32_t inside_net, std::uint32_t inside_mask, std::uint16_t out_port,
                              std::uint16_t in_port, std::uint64_t gc_at, const NatFastConfig& cfg,
                              const NatFastBuffers& buf, SplitScratch& scratch);

// Slots of the live entries of `out` (NatRecord values) whose deadline is non-zero and <= now, in
// slot order, into `slots` (capacity entries). Returns their count. One pass over the records.
// Throws std::invalid_argument if the values are not NatRecords.
//
// With `armed` (out.capacity() bytes; null: the full pass above), only the records whose armed byte
// is set are read: the caller keeps armed[s] != 0 for every record s whose deadline is non-zero
// (setting it when a deadline leaves 0; all ones is always valid). The result is the same as the
// full pass; armed bytes of records found with deadline 0 or not live are cleared on the way.
std::size_t nat_expired(flow::FlowTable& out, std::uint64_t now, std::uint32_t* slots,
                        std::uint8_t* armed = nullptr);

}  // namespace vnfkit::nfs
