#include "vnfkit/runtime/slab.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "vnfkit/runtime/ring.hpp"

namespace vnfkit::runtime {

namespace {

std::size_t align_up(std::size_t v) { return (v + kCacheLine - 1) & ~(kCacheLine - 1); }

template <typename T>
T* at(std::byte* slab, std::size_t off) noexcept {
  return reinterpret_cast<T*>(slab + off);
}

template <typename T>
packet::Buffer<T> ext(std::byte* slab, std::size_t off, std::size_t n, const std::shared_ptr<void>& keep) {
  return packet::Buffer<T>::external(at<T>(slab, off), n, keep);
}

// Copy `col` into the slab at `off` unless it already lives there.
template <typename T>
void put(std::byte* slab, std::size_t off, const packet::Buffer<T>& col) noexcept {
  T* dst = at<T>(slab, off);
  if (col.data() != dst && !col.empty()) std::memmove(dst, col.data(), col.size() * sizeof(T));
}

}  // namespace

SlabLayout::SlabLayout(std::uint32_t max_packets, std::uint64_t slab_bytes) : max_(max_packets), slab_bytes_(slab_bytes) {
  if (max_packets < 1 || max_packets > (1u << 20)) {
    throw std::invalid_argument("max_packets: must be in [1, 1048576], got " + std::to_string(max_packets));
  }
  const std::size_t m = max_packets;
  std::size_t o = align_up(sizeof(SlabHeader));
  auto region = [&](std::size_t bytes) {
    const std::size_t here = o;
    o = align_up(o + bytes);
    return here;
  };
  off_offsets_ = region((m + 1) * sizeof(std::uint32_t));
  off_arrival_ = region(m * sizeof(std::uint64_t));
  off_ts_ = region(m * sizeof(std::uint64_t));
  off_id_ = region(m * sizeof(std::uint64_t));
  off_key_ = region(m * sizeof(flow::FlowKey));
  off_hash_ = region(m * sizeof(std::uint32_t));
  off_flow_ = region(m * sizeof(std::uint32_t));
  off_queue_ = region(m * sizeof(std::uint16_t));
  off_port_ = region(m * sizeof(std::uint16_t));
  off_drop_ = region(m);
  off_flags_ = region(m);
  off_tcp_ = region(m);
  off_l3_ = region(m * sizeof(std::uint16_t));
  off_l4_ = region(m * sizeof(std::uint16_t));
  off_l4len_ = region(m * sizeof(std::uint16_t));
  off_data_ = o;
  if (slab_bytes < off_data_ + 64 * m) {
    throw std::invalid_argument("slab_bytes: " + std::to_string(slab_bytes) + " leaves less than 64 bytes per packet for " +
                                std::to_string(max_packets) + " packets (columns take " + std::to_string(off_data_) + ")");
  }
  data_cap_ = std::min<std::uint64_t>(slab_bytes - off_data_, 0xFFFFFFFFull);
}

void SlabLayout::reset(std::byte* slab) const noexcept {
  header(slab) = SlabHeader{0, 0, 0};
  at<std::uint32_t>(slab, off_offsets_)[0] = 0;
}

std::size_t SlabLayout::append(std::byte* slab, const packet::PacketBatch& src, const std::uint32_t* idx, std::size_t n,
                               std::uint64_t arrival_ns, const std::uint64_t* arrival) const noexcept {
  SlabHeader& h = header(slab);
  auto* offs = at<std::uint32_t>(slab, off_offsets_);
  auto* data = at<std::uint8_t>(slab, off_data_);
  std::size_t k = 0;
  std::uint32_t p = h.packets;
  std::uint64_t len = h.data_len;
  if (p == 0 && n > 0) h.opened_ns = arrival ? arrival[idx[0]] : arrival_ns;
  for (; k < n && p < max_; ++k, ++p) {
    const std::uint32_t i = idx[k];
    const auto bytes = src.packet(i);
    if (len + bytes.size() > data_cap_) break;
    std::memcpy(data + len, bytes.data(), bytes.size());
    len += bytes.size();
    offs[p + 1] = static_cast<std::uint32_t>(len);
    at<std::uint64_t>(slab, off_arrival_)[p] = arrival ? arrival[i] : arrival_ns;
    at<std::uint64_t>(slab, off_ts_)[p] = src.ts_ns[i];
    at<std::uint64_t>(slab, off_id_)[p] = src.packet_id[i];
    at<flow::FlowKey>(slab, off_key_)[p] = src.key[i];
    at<std::uint32_t>(slab, off_hash_)[p] = src.hash[i];
    at<std::uint32_t>(slab, off_flow_)[p] = src.flow_id[i];
    at<std::uint16_t>(slab, off_queue_)[p] = src.queue[i];
    at<std::uint16_t>(slab, off_port_)[p] = src.port[i];
    at<std::uint8_t>(slab, off_drop_)[p] = src.drop[i];
    at<std::uint8_t>(slab, off_flags_)[p] = src.flags[i];
    at<std::uint8_t>(slab, off_tcp_)[p] = src.tcp_flags[i];
    at<std::uint16_t>(slab, off_l3_)[p] = src.l3_offset[i];
    at<std::uint16_t>(slab, off_l4_)[p] = src.l4_offset[i];
    at<std::uint16_t>(slab, off_l4len_)[p] = src.l4_len[i];
  }
  h.packets = p;
  h.data_len = static_cast<std::uint32_t>(len);
  return k;
}

packet::PacketBatch SlabLayout::wrap(std::byte* slab, const std::shared_ptr<void>& keep) const {
  const SlabHeader& h = header(slab);
  const std::size_t n = h.packets;
  packet::PacketBatch b;
  b.data = ext<std::uint8_t>(slab, off_data_, h.data_len, keep);
  b.offsets = ext<std::uint32_t>(slab, off_offsets_, n + 1, keep);
  b.ts_ns = ext<std::uint64_t>(slab, off_ts_, n, keep);
  b.packet_id = ext<std::uint64_t>(slab, off_id_, n, keep);
  b.key = ext<flow::FlowKey>(slab, off_key_, n, keep);
  b.hash = ext<std::uint32_t>(slab, off_hash_, n, keep);
  b.flow_id = ext<std::uint32_t>(slab, off_flow_, n, keep);
  b.queue = ext<std::uint16_t>(slab, off_queue_, n, keep);
  b.port = ext<std::uint16_t>(slab, off_port_, n, keep);
  b.drop = ext<std::uint8_t>(slab, off_drop_, n, keep);
  b.flags = ext<std::uint8_t>(slab, off_flags_, n, keep);
  b.tcp_flags = ext<std::uint8_t>(slab, off_tcp_, n, keep);
  b.l3_offset = ext<std::uint16_t>(slab, off_l3_, n, keep);
  b.l4_offset = ext<std::uint16_t>(slab, off_l4_, n, keep);
  b.l4_len = ext<std::uint16_t>(slab, off_l4len_, n, keep);
  return b;
}

bool SlabLayout::store(std::byte* slab, const packet::PacketBatch& b) const noexcept {
  const std::size_t n = b.size();
  if (n > max_ || b.data.size() > data_cap_ || b.offsets.size() != n + 1) return false;
  const auto cols_ok = [n](std::size_t m) { return m == n; };
  if (!cols_ok(b.ts_ns.size()) || !cols_ok(b.packet_id.size()) || !cols_ok(b.key.size()) || !cols_ok(b.hash.size()) ||
      !cols_ok(b.flow_id.size()) || !cols_ok(b.queue.size()) || !cols_ok(b.port.size()) || !cols_ok(b.drop.size()) ||
      !cols_ok(b.flags.size()) || !cols_ok(b.tcp_flags.size()) || !cols_ok(b.l3_offset.size()) ||
      !cols_ok(b.l4_offset.size()) || !cols_ok(b.l4_len.size())) {
    return false;
  }
  // A VNF that changed the packet count leaves arrival times stale; the runtime rejects that case.
  put(slab, off_data_, b.data);
  put(slab, off_offsets_, b.offsets);
  put(slab, off_ts_, b.ts_ns);
  put(slab, off_id_, b.packet_id);
  put(slab, off_key_, b.key);
  put(slab, off_hash_, b.hash);
  put(slab, off_flow_, b.flow_id);
  put(slab, off_queue_, b.queue);
  put(slab, off_port_, b.port);
  put(slab, off_drop_, b.drop);
  put(slab, off_flags_, b.flags);
  put(slab, off_tcp_, b.tcp_flags);
  put(slab, off_l3_, b.l3_offset);
  put(slab, off_l4_, b.l4_offset);
  put(slab, off_l4len_, b.l4_len);
  header(slab).packets = static_cast<std::uint32_t>(n);
  header(slab).data_len = static_cast<std::uint32_t>(b.data.size());
  return true;
}

packet::PacketBatch SlabLayout::copy(std::byte* slab) const {
  packet::PacketBatch view = wrap(slab, std::make_shared<int>(0));
  packet::PacketBatch out = view;  // Buffer copies are deep: owned memory
  return out;
}

}  // namespace vnfkit::runtime
