#include "vnfkit/nfs/gateway.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "vnfkit/packet/rewrite.hpp"

namespace vnfkit::nfs {

namespace {
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

SplitCounts split_gateway(packet::PacketBatch& batch, std::uint32_t inside_net, std::uint32_t inside_mask,
                          std::uint32_t addr, std::uint16_t out_port, std::uint16_t in_port, bool ports_only,
                          const SplitOutput& o) {
  const std::size_t n = batch.size();
  if (batch.key.size() != n || batch.drop.size() != n || batch.flags.size() != n || batch.port.size() != n) {
    throw std::invalid_argument("batch: columns do not match the number of packets");
  }
  SplitCounts c;
  const std::uint32_t net = inside_net & inside_mask;
  std::uint16_t* port = batch.port.data();
  for (std::size_t i = 0; i < n; ++i) {
    const auto& k = batch.key[i];
    const auto idx = static_cast<std::uint32_t>(i);
    port[i] = 0;
    if (batch.drop[i] != 0) {
      o.src[i] = o.dst[i] = 0;
      continue;
    }
    if (k.family != 4) {
      o.src[i] = o.dst[i] = 0;
      o.not_v4[c.not_v4++] = idx;
      continue;
    }
    const std::uint32_t s = load_be32(k.src.data());
    const std::uint32_t d = load_be32(k.dst.data());
    o.src[i] = s;
    o.dst[i] = d;
    const bool nonfirst_fragment =
        (batch.flags[i] & (packet::kFlagFragment | packet::kFlagFirstFragment)) == packet::kFlagFragment;
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
  return c;
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
  std::vector<std::uint32_t> slots, rows, rw_idx, rw_addr;
  std::vector<std::uint16_t> rw_port;
  std::vector<std::uint8_t> is_new;
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

void check_list(const char* what, const std::uint32_t* idx, std::size_t n, std::size_t np) {
  for (std::size_t j = 0; j < n; ++j) {
    if (idx[j] >= np) {
      throw std::invalid_argument(std::string(what) + ": " + std::to_string(idx[j]) + " is out of range (" +
                                  std::to_string(np) + " packets)");
    }
  }
}
}  // namespace

NatFastResult nat_fast_path(packet::PacketBatch& batch, flow::FlowTable& out, flow::FlowTable& in,
                            const std::uint32_t* oidx, std::size_t n_out, const std::uint32_t* iidx, std::size_t n_in,
                            const NatFastConfig& cfg, const NatFastBuffers& buf) {
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
  check_list("oidx", oidx, n_out, np);
  check_list("iidx", iidx, n_in, np);
  NatFastResult res;
  if (cfg.fwd_rev != nullptr) {
    for (std::size_t j = 0; j < n_out; ++j) {
      if (cfg.fwd_rev[batch.key[oidx[j]].sport]) {
        res.bailed = true;
        return res;
      }
    }
  }
  FastScratch& sc = fast_scratch();
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
  for (std::size_t j = 0; j < n_out; ++j) {
    const std::uint32_t s = slots[j];
    const std::uint32_t r = oidx[j];
    if (s >= out_cap || is_new[j] || buf.mark[s]) {
      if (s < out_cap) buf.mark[s] = 1;
      buf.out_idx[ndef] = r;
      buf.out_slot[ndef] = s;
      buf.out_new[ndef] = is_new[j];
      ++ndef;
      continue;
    }
    NatRecord* rec = record_at(out, s);
    if (!refresh(rec, ts[r], tflags[r], cfg, undo)) {
      res.out_expired = true;
      break;
    }
    sc.rw_idx[nrw] = r;
    sc.rw_port[nrw] = rec->nat_port;
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
  res.out_deferred = ndef;
  std::fill(sc.rw_addr.begin(), sc.rw_addr.begin() + static_cast<std::ptrdiff_t>(nrw), cfg.public_addr);
  packet::rewrite_v4(batch, packet::Side::kSource, sc.rw_idx.data(), sc.rw_addr.data(), sc.rw_port.data(), nrw);
  res.translated = nrw;

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
  std::size_t k = 0;  // position in rows
  for (std::size_t j = 0; j < n_in; ++j) {
    const std::uint32_t r = iidx[j];
    if (k >= nrows || rows[k] != r) {  // flagged for a forward: deferred
      buf.in_idx[idef++] = r;
      continue;
    }
    const std::uint32_t is = slots[k++];
    if (is == flow::kNoSlot) {
      buf.in_idx[idef++] = r;
      continue;
    }
    const std::uint32_t os = in_vals[is];
    if (os >= out_cap) {  // not a reply entry of `out`: the caller's slow path reports it
      buf.in_idx[idef++] = r;
      continue;
    }
    NatRecord* rec = record_at(out, os);
    if (!refresh(rec, ts[r], tflags[r], cfg, undo)) {
      res.in_expired = true;
      break;
    }
    sc.rw_idx[nrw] = r;
    sc.rw_addr[nrw] = rec->int_addr;
    sc.rw_port[nrw] = rec->int_port;
    ++nrw;
  }
  if (res.in_expired) {
    roll_back(undo0, undo);
    std::copy(iidx, iidx + n_in, buf.in_idx);
    res.in_deferred = n_in;
    return res;
  }
  res.in_deferred = idef;
  packet::rewrite_v4(batch, packet::Side::kDestination, sc.rw_idx.data(), sc.rw_addr.data(), sc.rw_port.data(), nrw);
  res.reverse_translated = nrw;
  return res;
}

}  // namespace vnfkit::nfs
