#include "vnfkit/nfs/gateway.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "vnfkit/packet/bytes.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/rewrite.hpp"

namespace vnfkit::nfs {

namespace {
using packet::be::rd16;
using packet::be::rd32;
using packet::be::wr16;
using packet::be::wr32;

inline std::uint32_t load_be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

// Each uint64 field must lie inside a record; written without offset + 8 so a huge offset cannot wrap.
void check_field(const char* name, std::size_t offset, std::size_t record_size) {
  if (offset > record_size || record_size - offset < 8) {
    throw std::invalid_argument(std::string(name) + ": a uint64 field at offset " + std::to_string(offset) +
                                " does not fit in a " + std::to_string(record_size) + "-byte record");
  }
}

void check_fields(std::size_t record_size, std::size_t deadline_offset, std::size_t timeout_offset) {
  check_field("deadline_offset", deadline_offset, record_size);
  check_field("timeout_offset", timeout_offset, record_size);
}
}  // namespace

namespace {
// split_gateway's pass; kAddrs = false leaves o.src / o.dst unwritten (nat_fast_batch needs only
// the lists, the port presets and min_ts).
template <bool kAddrs>
SplitCounts split_impl(packet::PacketBatch& batch, std::uint32_t inside_net, std::uint32_t inside_mask,
                       std::uint32_t addr, std::uint16_t out_port, std::uint16_t in_port, bool ports_only,
                       const SplitOutput& o) {
  const std::size_t n = batch.size();
  if (batch.key.size() != n || batch.drop.size() != n || batch.flags.size() != n || batch.port.size() != n ||
      batch.ts_ns.size() != n) {
    throw std::invalid_argument("batch: columns do not match the number of packets");
  }
  SplitCounts c;
  const std::uint32_t net = inside_net & inside_mask;
  // the column pointers, loaded once (stores through the outputs would otherwise reload them)
  std::uint16_t* const port = batch.port.data();
  const flow::FlowKey* const keys = batch.key.data();
  const std::uint8_t* const drop = batch.drop.data();
  const std::uint8_t* const flags = batch.flags.data();
  const std::uint64_t* const ts = batch.ts_ns.data();
  std::uint64_t min_ts = UINT64_MAX;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& k = keys[i];
    const auto idx = static_cast<std::uint32_t>(i);
    min_ts = std::min(min_ts, ts[i]);
    port[i] = 0;
    if (drop[i] != 0) {
      if constexpr (kAddrs) o.src[i] = o.dst[i] = 0;
      continue;
    }
    if (k.family != 4) {
      if constexpr (kAddrs) o.src[i] = o.dst[i] = 0;
      o.not_v4[c.not_v4++] = idx;
      continue;
    }
    const std::uint32_t s = load_be32(k.src.data());
    const std::uint32_t d = load_be32(k.dst.data());
    if constexpr (kAddrs) {
      o.src[i] = s;
      o.dst[i] = d;
    }
    const bool nonfirst_fragment =
        (flags[i] & (packet::kFlagFragment | packet::kFlagFirstFragment)) == packet::kFlagFragment;
    if (nonfirst_fragment) {  // no L4 header: nothing a gateway can match on ports
      o.other[c.other++] = idx;
      continue;
    }
    const bool s_in = (s & inside_mask) == net;
    const bool d_in = (d & inside_mask) == net;
    const bool has_ports = k.proto == 6 || k.proto == 17;
    if (s_in && !d_in && d != addr) {
      if (ports_only && !has_ports) {
        o.outbound_np[c.outbound_np++] = idx;
      } else {
        o.outbound[c.outbound++] = idx;
        port[i] = out_port;
      }
    } else if (d == addr && !s_in) {
      if (ports_only && !has_ports) {
        o.inbound_np[c.inbound_np++] = idx;
      } else {
        o.inbound[c.inbound++] = idx;
        port[i] = in_port;
      }
    } else {
      o.other[c.other++] = idx;
    }
  }
  c.min_ts = min_ts;
  return c;
}
}  // namespace

SplitCounts split_gateway(packet::PacketBatch& batch, std::uint32_t inside_net, std::uint32_t inside_mask,
                          std::uint32_t addr, std::uint16_t out_port, std::uint16_t in_port, bool ports_only,
                          const SplitOutput& o) {
  return split_impl<true>(batch, inside_net, inside_mask, addr, out_port, in_port, ports_only, o);
}

void touch_deadlines(std::uint8_t* records, std::size_t n_records, std::size_t record_size,
                     std::size_t deadline_offset, std::size_t timeout_offset, const std::uint32_t* slots,
                     const std::uint64_t* ts, const std::uint8_t* flags, std::size_t n, std::uint8_t close_mask,
                     std::uint64_t close_timeout, std::uint64_t* old) {
  check_fields(record_size, deadline_offset, timeout_offset);
  for (std::size_t j = 0; j < n; ++j) {
    if (slots[j] >= n_records) {
      throw std::invalid_argument("slots: " + std::to_string(slots[j]) + " is out of range (" +
                                  std::to_string(n_records) + " records)");
    }
  }
  constexpr std::size_t kAhead = 12;  // records are scattered: keep several misses in flight
  for (std::size_t j = 0; j < std::min(n, kAhead); ++j) {
    __builtin_prefetch(records + static_cast<std::size_t>(slots[j]) * record_size + deadline_offset, 1);
  }
  for (std::size_t j = 0; j < n; ++j) {
    if (j + kAhead < n) {
      __builtin_prefetch(records + static_cast<std::size_t>(slots[j + kAhead]) * record_size + deadline_offset, 1);
    }
    std::uint8_t* r = records + static_cast<std::size_t>(slots[j]) * record_size;
    std::uint64_t timeout;
    std::uint64_t deadline;
    std::memcpy(&timeout, r + timeout_offset, 8);
    std::memcpy(&deadline, r + deadline_offset, 8);
    if (flags != nullptr && (flags[j] & close_mask) != 0 && close_timeout < timeout) {
      timeout = close_timeout;
      std::memcpy(r + timeout_offset, &timeout, 8);
    }
    old[j] = deadline;
    deadline = ts[j] + timeout;
    std::memcpy(r + deadline_offset, &deadline, 8);
  }
}

std::size_t touch_deadlines_at(std::uint8_t* records, std::size_t n_records, std::size_t record_size,
                               std::size_t deadline_offset, std::size_t timeout_offset, const std::uint32_t* slots,
                               const packet::PacketBatch& batch, const std::uint32_t* indices, std::size_t n,
                               std::uint8_t close_mask, std::uint64_t close_timeout, std::uint8_t* expired) {
  check_fields(record_size, deadline_offset, timeout_offset);
  const std::size_t np = batch.size();
  if (batch.ts_ns.size() != np || batch.tcp_flags.size() != np) {
    throw std::invalid_argument("batch: columns do not match the number of packets");
  }
  for (std::size_t j = 0; j < n; ++j) {
    if (slots[j] >= n_records) {
      throw std::invalid_argument("slots: " + std::to_string(slots[j]) + " is out of range (" +
                                  std::to_string(n_records) + " records)");
    }
    if (indices[j] >= np) {
      throw std::invalid_argument("indices: " + std::to_string(indices[j]) + " is out of range (" +
                                  std::to_string(np) + " packets)");
    }
  }
  constexpr std::size_t kAhead = 12;
  for (std::size_t j = 0; j < std::min(n, kAhead); ++j) {
    __builtin_prefetch(records + static_cast<std::size_t>(slots[j]) * record_size + deadline_offset, 1);
  }
  std::size_t count = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (j + kAhead < n) {
      __builtin_prefetch(records + static_cast<std::size_t>(slots[j + kAhead]) * record_size + deadline_offset, 1);
    }
    std::uint8_t* r = records + static_cast<std::size_t>(slots[j]) * record_size;
    const std::uint64_t ts = batch.ts_ns[indices[j]];
    std::uint64_t timeout;
    std::uint64_t deadline;
    std::memcpy(&timeout, r + timeout_offset, 8);
    std::memcpy(&deadline, r + deadline_offset, 8);
    if ((batch.tcp_flags[indices[j]] & close_mask) != 0 && close_timeout < timeout) {
      timeout = close_timeout;
      std::memcpy(r + timeout_offset, &timeout, 8);
    }
    const bool exp = deadline != 0 && ts >= deadline;
    expired[j] = exp ? 1 : 0;
    count += exp ? 1 : 0;
    deadline = ts + timeout;
    std::memcpy(r + deadline_offset, &deadline, 8);
  }
  return count;
}

namespace {
// Per-thread scratch of nat_fast_path: grown to the largest batch seen, then reused (no
// allocation per call in steady state).
struct FastScratch {
  std::vector<std::uint32_t> slots, rows, rw_idx, rw_addr, sel, islots;
  std::vector<std::uint32_t> base, start, todo;
  std::vector<std::uint16_t> rw_port, ports, sub, got;
  std::vector<std::uint8_t> is_new, inew;
  std::vector<std::uint64_t> ids, zero_ts, todo_ids;
  std::vector<flow::FlowKey> reply;
  struct Undo {
    NatRecord* rec;
    std::uint64_t deadline, timeout;
  };
  std::vector<Undo> undo;
  void reserve(std::size_t n) {
    if (slots.size() < n) {
      slots.resize(n);
      rows.resize(n);
      rw_idx.resize(n);
      rw_addr.resize(n);
      rw_port.resize(n);
      is_new.resize(n);
      undo.resize(n);
      sel.resize(n);
      islots.resize(n);
      ports.resize(n);
      inew.resize(n);
      ids.resize(n);
      zero_ts.assign(n, 0);
      base.resize(n);
      start.resize(n);
      todo.resize(n);
      sub.resize(n);
      got.resize(n);
      todo_ids.resize(n);
      reply.resize(n);
    }
  }
};

FastScratch& fast_scratch() {
  thread_local FastScratch s;
  return s;
}

inline NatRecord* record_at(flow::FlowTable& t, std::uint32_t slot) noexcept {
  return reinterpret_cast<NatRecord*>(t.values() + std::size_t{slot} * sizeof(NatRecord));
}

// Refresh `r` for a packet at `ts` with TCP flags `flags`; false if the mapping had expired. The
// previous fields go to the undo log first.
inline bool refresh(NatRecord* r, std::uint64_t ts, std::uint8_t flags, const NatFastConfig& cfg,
                    FastScratch::Undo*& undo) noexcept {
  *undo++ = {r, r->deadline, r->timeout};
  std::uint64_t timeout = r->timeout;
  if ((flags & cfg.close_mask) != 0 && cfg.close_timeout < timeout) {
    timeout = cfg.close_timeout;
    r->timeout = timeout;
  }
  const bool expired = r->deadline != 0 && ts >= r->deadline;
  r->deadline = ts + timeout;
  return !expired;
}

void roll_back(FastScratch::Undo* begin, FastScratch::Undo* end) noexcept {
  while (end != begin) {
    --end;
    end->rec->deadline = end->deadline;
    end->rec->timeout = end->timeout;
  }
}

// rewrite_v4 for the rows of nat_fast_path (in range: checked by its caller), with its bytes and
// key updates: TCP/UDP packets here in one tight loop, anything else through rewrite_v4. The
// address is addr[j], or `one` for every packet when addr is null. The IPv4 header and the L4
// checksum share the address's part of the RFC 1624 sum (the same sums as rewrite_v4's, regrouped).
template <bool kSrc>
void rewrite_rows(packet::PacketBatch& b, const std::uint32_t* rows, const std::uint32_t* addr, std::uint32_t one,
                  const std::uint16_t* port, std::size_t n) {
  const packet::RewriteColumns col(b);
  constexpr std::size_t kAddrAt = kSrc ? 12 : 16;
  constexpr std::size_t kPortAt = kSrc ? 0 : 2;
  constexpr packet::Side kSide = kSrc ? packet::Side::kSource : packet::Side::kDestination;
  col.prefetch_first(rows, n);
  for (std::size_t j = 0; j < n; ++j) {
    col.prefetch_next(rows, j, n);
    const std::size_t i = rows[j];
    flow::FlowKey& k = col.keys[i];
    const std::uint8_t proto = k.proto;
    const std::uint32_t new_addr = addr != nullptr ? addr[j] : one;
    // TCP and UDP come mixed: the tests on the protocol below are written so they compile without
    // a branch on it (its branches mispredict often)
    const bool tcp = proto == 6;
    if (!(tcp | (proto == 17))) {  // not the fast path's protocols: the general rewrite
      packet::rewrite_v4(b, kSide, rows + j, &new_addr, port + j, 1);
      continue;
    }
    if (col.drop[i] != 0 || k.family != 4) continue;
    std::uint8_t* const pkt = col.data + col.offsets[i];
    const std::size_t l3 = col.l3_off[i];
    const bool has_l4 = (col.flags[i] & packet::kFlagHasL4) != 0;
    // v4_columns_in_bounds for TCP (a 20-byte L4 header) and UDP (8)
    const std::size_t len = col.offsets[i + 1] - col.offsets[i];
    if (l3 + 20 > len) continue;
    const std::size_t iph = static_cast<std::size_t>(pkt[l3] & 0x0F) * 4;
    if (iph < 20 || l3 + iph > len) continue;
    const std::size_t l4 = col.l4_off[i];
    if (has_l4 &&
        (l4 < l3 + iph || l4 + col.l4_len[i] > len || static_cast<unsigned>(col.l4_len[i]) < 8u + 12u * static_cast<unsigned>(tcp))) {
      continue;
    }
    std::uint8_t* const ip = pkt + l3;
    std::uint8_t* const a = ip + kAddrAt;
    const std::uint32_t old_addr = rd32(a);
    wr32(a, new_addr);
    const std::uint32_t da = static_cast<std::uint32_t>(static_cast<std::uint16_t>(~(old_addr >> 16))) +
                             static_cast<std::uint16_t>(~old_addr) + (new_addr >> 16) + (new_addr & 0xFFFFu);
    wr16(ip + 10, static_cast<std::uint16_t>(
                      ~packet::fold(static_cast<std::uint32_t>(static_cast<std::uint16_t>(~rd16(ip + 10))) + da)));
    const std::uint32_t be_addr = __builtin_bswap32(new_addr);
    std::memcpy((kSrc ? k.src : k.dst).data(), &be_addr, 4);
    if (!has_l4) continue;
    std::uint8_t* const l4h = pkt + l4;
    const std::uint16_t new_port = port[j];
    std::uint8_t* const pp = l4h + kPortAt;
    std::uint8_t* const cp = l4h + 6 + 10 * static_cast<std::size_t>(tcp);  // the checksum: TCP 16, UDP 6
    const std::uint16_t old_port = rd16(pp);
    wr16(pp, new_port);
    std::uint16_t c = rd16(cp);
    if (tcp | (c != 0)) {  // a UDP checksum of 0 (none) stays 0
      c = static_cast<std::uint16_t>(~packet::fold(static_cast<std::uint32_t>(static_cast<std::uint16_t>(~c)) + da +
                                                   static_cast<std::uint16_t>(~old_port) + new_port));
      // UDP: a computed 0 is sent as 0xFFFF
      c = static_cast<std::uint16_t>(c | (0u - static_cast<unsigned>((!tcp) & (c == 0))));
      wr16(cp, c);
    }
    (kSrc ? k.sport : k.dport) = new_port;
  }
}

constexpr std::uint8_t kMarkNew = 1;
constexpr std::uint8_t kMarkLost = 2;

// sc.ports[k] = a port for the k-th of the m new flows of one protocol (rows sc.sel[k] of the
// deferred lists, packet ids sc.ids[k]), 0 where none: the sub-pool choice of NatFastConfig, one
// pool call per affinity round.
void allocate_ports(state::PortPool& pool, const packet::PacketBatch& batch, const NatFastConfig& cfg,
                    const NatFastBuffers& buf, std::size_t m, FastScratch& sc) {
  const std::uint32_t nq = cfg.num_queues;
  const auto share = [&](std::uint32_t g) {
    return nq > 1 ? static_cast<std::uint16_t>(g * nq + cfg.queue) : static_cast<std::uint16_t>(g);
  };
  if (cfg.toeplitz == nullptr) {
    std::span<const std::uint16_t> sub;
    if (nq > 1) {
      std::fill(sc.sub.begin(), sc.sub.begin() + static_cast<std::ptrdiff_t>(m), cfg.queue);
      sub = {sc.sub.data(), m};
    }
    pool.allocate(*cfg.ctx, {sc.ids.data(), m}, sub, {sc.ports.data(), m});
    return;
  }
  std::fill(sc.ports.begin(), sc.ports.begin() + static_cast<std::ptrdiff_t>(m), std::uint16_t{0});
  const std::size_t nc = cfg.ncand;
  if (nc == 0) return;
  for (std::size_t k = 0; k < m; ++k) {
    const std::uint32_t row = buf.out_idx[sc.sel[k]];
    const flow::FlowKey& key = batch.key[row];
    sc.base[k] = cfg.toeplitz->hash_v4(key.dst_v4(), cfg.public_addr, key.dport, 0, true) & cfg.reta_mask;
    sc.start[k] = static_cast<std::uint32_t>((batch.hash[row] >> 8) % nc);
    sc.todo[k] = static_cast<std::uint32_t>(k);
  }
  std::size_t nt = m;
  for (std::size_t r = 0; r < nc && nt != 0; ++r) {
    for (std::size_t t = 0; t < nt; ++t) {
      const std::uint32_t k = sc.todo[t];
      const auto g = static_cast<std::uint16_t>(cfg.cand[(sc.start[k] + r) % nc] ^ sc.base[k]);
      sc.sub[t] = share(g);
      sc.todo_ids[t] = sc.ids[k];
    }
    pool.allocate(*cfg.ctx, {sc.todo_ids.data(), nt}, {sc.sub.data(), nt}, {sc.got.data(), nt});
    std::size_t left = 0;
    for (std::size_t t = 0; t < nt; ++t) {
      const std::uint32_t k = sc.todo[t];
      sc.ports[k] = sc.got[t];
      if (sc.got[t] == state::PortPool::kExhausted) sc.todo[left++] = k;
    }
    nt = left;
  }
}

// Decide the deferred outbound packets of nat_fast_path with the pools (see gateway.hpp).
// Returns false if the reply table disagreed with the outbound table (a bug: nothing more done).
bool decide_new_flows(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in, const NatFastConfig& cfg,
                      const NatFastBuffers& buf, std::size_t ndef, FastScratch& sc, NatFastResult& res) {
  const std::uint32_t out_cap = static_cast<std::uint32_t>(out.capacity());
  auto* in_vals = reinterpret_cast<std::uint32_t*>(in.values());
  for (std::size_t j = 0; j < ndef; ++j) {
    if (buf.out_slot[j] >= out_cap) {
      const std::uint32_t r = buf.out_idx[j];
      batch.port[r] = 0;
      batch.drop[r] = static_cast<std::uint8_t>(packet::DropReason::kTableFull);
      ++res.drop_table_full;
    }
  }
  for (const std::uint8_t proto : {std::uint8_t{6}, std::uint8_t{17}}) {
    state::PortPool* pool = proto == 6 ? cfg.tcp_pool : cfg.udp_pool;
    const std::uint64_t timeout = proto == 6 ? cfg.tcp_timeout : cfg.udp_timeout;
    std::size_t m = 0;
    for (std::size_t j = 0; j < ndef; ++j) {
      if (buf.out_new[j] && batch.key[buf.out_idx[j]].proto == proto) {
        sc.sel[m] = static_cast<std::uint32_t>(j);
        sc.ids[m] = batch.packet_id[buf.out_idx[j]];
        ++m;
      }
    }
    if (m == 0) continue;
    allocate_ports(*pool, batch, cfg, buf, m, sc);
    std::size_t ok = 0;
    for (std::size_t k = 0; k < m; ++k) {
      const std::uint32_t j = sc.sel[k];
      const std::uint32_t s = buf.out_slot[j];
      const std::uint16_t port = sc.ports[k];
      if (port == state::PortPool::kExhausted) {
        buf.mark[s] = kMarkLost;
        ++res.pool_exhausted;
        continue;
      }
      const flow::FlowKey& key = batch.key[buf.out_idx[j]];
      NatRecord* rec = record_at(out, s);
      rec->nat_port = port;
      rec->proto = proto;
      rec->timeout = timeout;
      rec->int_addr = key.src_v4();
      rec->int_port = key.sport;
      flow::FlowKey& rk = sc.reply[ok];
      rk = flow::FlowKey{};
      rk.src = key.dst;
      rk.dst[0] = static_cast<std::uint8_t>(cfg.public_addr >> 24);
      rk.dst[1] = static_cast<std::uint8_t>(cfg.public_addr >> 16);
      rk.dst[2] = static_cast<std::uint8_t>(cfg.public_addr >> 8);
      rk.dst[3] = static_cast<std::uint8_t>(cfg.public_addr);
      rk.sport = key.dport;
      rk.dport = port;
      rk.proto = proto;
      rk.family = 4;
      sc.sel[ok] = s;  // reuse: the slot of the k-th successful flow
      ++ok;
    }
    res.new_mappings += ok;
    const std::size_t inserted = in.lookup_or_insert(sc.reply.data(), nullptr, sc.zero_ts.data(), nullptr, ok,
                                                     sc.islots.data(), sc.inew.data());
    if (inserted != ok) return false;
    for (std::size_t k = 0; k < ok; ++k) {
      in_vals[sc.islots[k]] = sc.sel[k];
      record_at(out, sc.sel[k])->in_slot = sc.islots[k];
    }
  }
  // packets of flows that got no port are dropped and the flows forgotten; the others refresh
  // their (new) record and are rewritten, in packet order
  std::size_t nrw = 0;
  FastScratch::Undo* undo = sc.undo.data();  // new records never expire: the log is not needed
  for (std::size_t j = 0; j < ndef; ++j) {
    const std::uint32_t s = buf.out_slot[j];
    const std::uint32_t r = buf.out_idx[j];
    if (s >= out_cap) continue;
    if (buf.mark[s] == kMarkLost) {
      batch.port[r] = 0;
      batch.drop[r] = static_cast<std::uint8_t>(packet::DropReason::kPoolExhausted);
      ++res.drop_exhausted;
      continue;
    }
    NatRecord* rec = record_at(out, s);
    if (buf.armed != nullptr) buf.armed[s] = 1;  // a new record's deadline leaves 0 here
    refresh(rec, batch.ts_ns[r], batch.tcp_flags[r], cfg, undo);
    undo = sc.undo.data();
    sc.rw_idx[nrw] = r;
    sc.rw_port[nrw] = rec->nat_port;
    ++nrw;
  }
  for (std::size_t j = 0; j < ndef; ++j) {
    const std::uint32_t s = buf.out_slot[j];
    if (s < out_cap && buf.mark[s] == kMarkLost) {
      out.remove_slot(s);
      buf.mark[s] = 0;
    }
  }
  rewrite_rows<true>(batch, sc.rw_idx.data(), nullptr, cfg.public_addr, sc.rw_port.data(), nrw);
  res.translated += nrw;
  return true;
}

void check_list(const char* what, const std::uint32_t* idx, std::size_t n, std::size_t np) {
  for (std::size_t j = 0; j < n; ++j) {
    if (idx[j] >= np) {
      throw std::invalid_argument(std::string(what) + ": " + std::to_string(idx[j]) + " is out of range (" +
                                  std::to_string(np) + " packets)");
    }
  }
}
}  // namespace

namespace {
// nat_fast_path's checks of the batch's columns and the tables' value sizes (not of the lists).
void check_fast_args(const packet::PacketBatch& batch, const flow::FlowTable& out, const flow::FlowTable& in) {
  const std::size_t np = batch.size();
  if (batch.key.size() != np || batch.ts_ns.size() != np || batch.tcp_flags.size() != np ||
      batch.flow_id.size() != np || batch.port.size() != np) {
    throw std::invalid_argument("batch: columns do not match the number of packets");
  }
  if (out.config().value_size != sizeof(NatRecord)) {
    throw std::invalid_argument("out: values must be 32-byte NAT records, got " +
                                std::to_string(out.config().value_size) + " bytes");
  }
  if (in.config().value_size != sizeof(std::uint32_t)) {
    throw std::invalid_argument("in: values must be uint32 slots, got " + std::to_string(in.config().value_size) +
                                " bytes");
  }
}

// nat_fast_path on lists already checked to be in range, with the caller's scratch. Kept out of
// GCC's interprocedural optimisation: propagating the (thread_local) scratch into it would make
// every use of it in the loops fetch the thread's address again (__tls_get_addr per access).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#endif
NatFastResult fast_path_impl(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                             const std::uint32_t* oidx, std::size_t n_out, const std::uint32_t* iidx,
                             std::size_t n_in, const NatFastConfig& cfg, const NatFastBuffers& buf,
                             FastScratch& sc) {
  const std::size_t np = batch.size();
  NatFastResult res;
  if (cfg.fwd_rev != nullptr) {
    for (std::size_t j = 0; j < n_out; ++j) {
      if (cfg.fwd_rev[batch.key[oidx[j]].sport]) {
        res.bailed = true;
        return res;
      }
    }
  }
  sc.reserve(std::max(n_out, n_in));
  const std::uint64_t* ts = batch.ts_ns.data();
  const std::uint8_t* tflags = batch.tcp_flags.data();
  const std::uint32_t out_cap = static_cast<std::uint32_t>(out.capacity());

  // ---- outbound
  std::uint32_t* slots = sc.slots.data();
  std::uint8_t* is_new = sc.is_new.data();
  out.lookup_or_insert_rows(batch.key.data(), batch.flow_id.data(), ts, nullptr, np, oidx, n_out, slots, is_new);
  FastScratch::Undo* undo = sc.undo.data();
  std::size_t nrw = 0, ndef = 0;
  // the records are scattered over the value array: keep several misses in flight (the lookup has
  // already started each hit's fetch; this brings the next few into L1)
  std::uint8_t* const vals = out.values();
  const auto rec_of = [vals](std::uint32_t s) {
    return reinterpret_cast<NatRecord*>(vals + std::size_t{s} * sizeof(NatRecord));
  };
  std::uint32_t* const rw_idx = sc.rw_idx.data();
  std::uint16_t* const rw_port = sc.rw_port.data();
  std::uint8_t* const mark = buf.mark;
  std::uint8_t* const armed = buf.armed;
  constexpr std::size_t kAhead = 8;
  auto prefetch_out = [&](std::size_t j) {
    if (slots[j] < out_cap) __builtin_prefetch(rec_of(slots[j]), 1);
  };
  for (std::size_t j = 0; j < std::min(n_out, kAhead); ++j) prefetch_out(j);
  for (std::size_t j = 0; j < n_out; ++j) {
    if (j + kAhead < n_out) prefetch_out(j + kAhead);
    const std::uint32_t s = slots[j];
    const std::uint32_t r = oidx[j];
    NatRecord* const rec = s < out_cap ? rec_of(s) : nullptr;
    // A marked slot was deferred earlier in this loop, so this call inserted it and its record is
    // still all zero: the mark needs reading only for a record whose deadline is 0.
    if (rec == nullptr || is_new[j] || (rec->deadline == 0 && mark[s] != 0)) {
      if (rec != nullptr) mark[s] = kMarkNew;
      buf.out_idx[ndef] = r;
      buf.out_slot[ndef] = s;
      buf.out_new[ndef] = is_new[j];
      ++ndef;
      continue;
    }
    if (armed != nullptr && rec->deadline == 0) armed[s] = 1;
    if (!refresh(rec, ts[r], tflags[r], cfg, undo)) {
      res.out_expired = true;
      break;
    }
    rw_idx[nrw] = r;
    rw_port[nrw] = rec->nat_port;
    ++nrw;
  }
  for (std::size_t j = 0; j < ndef; ++j) {
    if (buf.out_slot[j] < out_cap) buf.mark[buf.out_slot[j]] = 0;
  }
  if (res.out_expired) {
    roll_back(sc.undo.data(), undo);
    for (std::size_t j = 0; j < n_out; ++j) {
      buf.out_idx[j] = oidx[j];
      buf.out_slot[j] = slots[j];
      buf.out_new[j] = is_new[j];
    }
    std::copy(iidx, iidx + n_in, buf.in_idx);
    res.out_deferred = n_out;
    res.in_deferred = n_in;
    return res;
  }
  rewrite_rows<true>(batch, sc.rw_idx.data(), nullptr, cfg.public_addr, sc.rw_port.data(), nrw);
  res.translated = nrw;
  res.out_deferred = ndef;
  if (ndef != 0 && cfg.tcp_pool != nullptr && cfg.udp_pool != nullptr && cfg.ctx != nullptr) {
    if (!decide_new_flows(batch, out, in, cfg, buf, ndef, sc, res)) {
      throw std::logic_error("nat_fast_path: the reply table is out of sync with the outbound table");
    }
    res.out_deferred = 0;
  }

  // ---- inbound
  std::uint32_t* rows = sc.rows.data();
  std::size_t nrows = 0, idef = 0;
  for (std::size_t j = 0; j < n_in; ++j) {
    const std::uint32_t r = iidx[j];
    if (cfg.fwd_in != nullptr && cfg.fwd_in[batch.key[r].dport]) continue;  // deferred below
    rows[nrows++] = r;
  }
  in.lookup_rows(batch.key.data(), np, rows, nrows, slots);
  const auto* in_vals = reinterpret_cast<const std::uint32_t*>(in.values());
  FastScratch::Undo* const undo0 = sc.undo.data();
  undo = undo0;
  nrw = 0;
  // two dependent misses per packet (reply value -> outbound record): first resolve every hit's
  // outbound slot (prefetching the reply values ahead), then walk the records prefetching ahead
  const std::uint32_t in_cap = static_cast<std::uint32_t>(in.capacity());
  std::uint32_t* const rw_addr = sc.rw_addr.data();
  std::uint32_t* oslot = sc.islots.data();
  constexpr std::size_t kValAhead = 16;
  for (std::size_t q = 0; q < std::min(nrows, kValAhead); ++q) {
    if (slots[q] < in_cap) __builtin_prefetch(in_vals + slots[q], 0);
  }
  for (std::size_t q = 0; q < nrows; ++q) {
    if (q + kValAhead < nrows && slots[q + kValAhead] < in_cap) __builtin_prefetch(in_vals + slots[q + kValAhead], 0);
    oslot[q] = slots[q] < in_cap ? in_vals[slots[q]] : flow::kNoSlot;
    // and start every record's fetch now, into L2 (a batch's records fit there many times over)
    if (oslot[q] < out_cap) __builtin_prefetch(rec_of(oslot[q]), 1, 2);
  }
  auto prefetch_in_rec = [&](std::size_t q) {
    if (oslot[q] < out_cap) __builtin_prefetch(rec_of(oslot[q]), 1);
  };
  for (std::size_t q = 0; q < std::min(nrows, kAhead); ++q) prefetch_in_rec(q);
  std::size_t k = 0;  // position in rows
  for (std::size_t j = 0; j < n_in; ++j) {
    const std::uint32_t r = iidx[j];
    if (k + kAhead < nrows) prefetch_in_rec(k + kAhead);
    if (k >= nrows || rows[k] != r) {  // flagged for a forward: deferred
      buf.in_idx[idef++] = r;
      continue;
    }
    const std::uint32_t is = slots[k];
    const std::uint32_t os = oslot[k++];
    if (is == flow::kNoSlot) {
      buf.in_idx[idef++] = r;
      continue;
    }
    if (os >= out_cap) {  // not a reply entry of `out`: the caller's slow path reports it
      buf.in_idx[idef++] = r;
      continue;
    }
    NatRecord* rec = rec_of(os);
    if (armed != nullptr && rec->deadline == 0) armed[os] = 1;
    out.mark_dirty_unchecked(os);  // reached by the slot kept in the reply value, not by a lookup of `out`
    if (!refresh(rec, ts[r], tflags[r], cfg, undo)) {
      res.in_expired = true;
      break;
    }
    rw_idx[nrw] = r;
    rw_addr[nrw] = rec->int_addr;
    rw_port[nrw] = rec->int_port;
    ++nrw;
  }
  if (res.in_expired) {
    roll_back(undo0, undo);
    std::copy(iidx, iidx + n_in, buf.in_idx);
    res.in_deferred = n_in;
    return res;
  }
  res.in_deferred = idef;
  rewrite_rows<false>(batch, sc.rw_idx.data(), sc.rw_addr.data(), 0, sc.rw_port.data(), nrw);
  res.reverse_translated = nrw;
  return res;
}

}  // namespace

NatFastResult nat_fast_path(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                            const std::uint32_t* oidx, std::size_t n_out, const std::uint32_t* iidx, std::size_t n_in,
                            const NatFastConfig& cfg, const NatFastBuffers& buf) {
  check_fast_args(batch, out, in);
  const std::size_t np = batch.size();
  check_list("oidx", oidx, n_out, np);
  check_list("iidx", iidx, n_in, np);
  return fast_path_impl(batch, out, in, oidx, n_out, iidx, n_in, cfg, buf, fast_scratch());
}

SplitOutput SplitScratch::reserve(std::size_t n) {
  if (src.size() < n) {
    for (auto* v : {&src, &dst, &outbound, &inbound, &other, &not_v4, &outbound_np, &inbound_np}) v->resize(n);
  }
  return {src.data(),   dst.data(),    outbound.data(),    inbound.data(),
          other.data(), not_v4.data(), outbound_np.data(), inbound_np.data()};
}

NatBatchResult nat_fast_batch(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                              std::uint32_t inside_net, std::uint32_t inside_mask, std::uint16_t out_port,
                              std::uint16_t in_port, std::uint64_t gc_at, const NatFastConfig& cfg,
                              const NatFastBuffers& buf, SplitScratch& scratch) {
  const SplitOutput o = scratch.reserve(batch.size());
  const SplitCounts c = split_impl<false>(batch, inside_net, inside_mask, cfg.public_addr, out_port, in_port, true, o);
  NatBatchResult r;
  if (c.other != 0 || c.not_v4 != 0 || c.outbound_np != 0 || c.inbound_np != 0 || c.min_ts >= gc_at) {
    r.general = true;
    r.gc_due = c.other == 0 && c.not_v4 == 0 && c.outbound_np == 0 && c.inbound_np == 0;
    r.min_ts = c.min_ts;
    return r;
  }
  // the split's lists are in range by construction
  check_fast_args(batch, out, in);
  r.fast = fast_path_impl(batch, out, in, o.outbound, c.outbound, o.inbound, c.inbound, cfg, buf, fast_scratch());
  r.general = r.fast.bailed;
  return r;
}

std::size_t nat_expired(flow::FlowTable& out, std::uint64_t now, std::uint32_t* slots, std::uint8_t* armed) {
  if (out.config().value_size != sizeof(NatRecord)) {
    throw std::invalid_argument("out: values must be 32-byte NAT records, got " +
                                std::to_string(out.config().value_size) + " bytes");
  }
  const std::size_t cap = out.capacity();
  const flow::FlowEntry* e = out.entries();
  const std::uint8_t* v = out.values();
  auto deadline_of = [v](std::size_t s) {
    std::uint64_t d;
    std::memcpy(&d, v + s * sizeof(NatRecord) + offsetof(NatRecord, deadline), sizeof d);
    return d;
  };
  std::size_t k = 0;
  if (armed == nullptr) {
    for (std::size_t s = 0; s < cap; ++s) {
      const std::uint64_t d = deadline_of(s);
      if (d != 0 && d <= now && (e[s].state & flow::FlowEntry::kLive)) slots[k++] = static_cast<std::uint32_t>(s);
    }
    return k;
  }
  auto visit = [&](std::size_t t) {
    if (armed[t] == 0) return;
    const std::uint64_t d = deadline_of(t);
    if (d == 0 || (e[t].state & flow::FlowEntry::kLive) == 0) {
      armed[t] = 0;  // nothing to expire here until the deadline leaves 0 again
    } else if (d <= now) {
      slots[k++] = static_cast<std::uint32_t>(t);
    }
  };
  std::size_t s = 0;
  for (; s + 32 <= cap; s += 32) {  // skip unarmed slots 32 at a time, then eight at a time
    std::uint64_t w[4];
    std::memcpy(w, armed + s, sizeof w);
    if ((w[0] | w[1] | w[2] | w[3]) == 0) continue;
    for (std::size_t q = 0; q < 4; ++q) {
      if (w[q] == 0) continue;
      for (std::size_t t = s + 8 * q; t < s + 8 * q + 8; ++t) visit(t);
    }
  }
  for (; s + 8 <= cap; s += 8) {
    std::uint64_t word;
    std::memcpy(&word, armed + s, sizeof word);
    if (word == 0) continue;
    for (std::size_t t = s; t < s + 8; ++t) visit(t);
  }
  for (; s < cap; ++s) visit(s);
  return k;
}

}  // namespace vnfkit::nfs
