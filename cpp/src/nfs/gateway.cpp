#include "vnfkit/nfs/gateway.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

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

}  // namespace vnfkit::nfs
