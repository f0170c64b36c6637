#include "vnfkit/runtime/slab.hpp"

#include <algorithm>
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
  const std::uint32_t p = h.packets;
  n = std::min<std::size_t>(n, max_ - p);
  if (n == 0) return 0;
  const std::uint32_t* so = src.offsets.data();
  const std::uint8_t* sd = src.data.data();
  auto* offs = at<std::uint32_t>(slab, off_offsets_) + p;
  auto* data = at<std::uint8_t>(slab, off_data_);
  std::uint64_t len = h.data_len;
  std::size_t k = 0;
  // Queue lists are in arrival order, so a run of consecutive indices is one block of the source:
  // the whole run's bytes go in one copy (a single queue's slab is one run per input batch).
  while (k < n) {
    const std::uint32_t first = idx[k];
    std::size_t e = k + 1;
    while (e < n && idx[e] == idx[e - 1] + 1) ++e;
    // as many packets of the run [k, e) as fit the data capacity
    const std::uint32_t base = so[first];
    std::size_t fit = e - k;
    if (len + (so[first + fit] - base) > data_cap_) {
      fit = 0;
      while (fit < e - k && len + (so[first + fit + 1] - base) <= data_cap_) ++fit;
    }
    if (fit == 0) break;
    const std::uint32_t bytes = so[first + fit] - base;
    if (bytes != 0) std::memcpy(data + len, sd + base, bytes);  // (an empty batch may have no data buffer)
    const std::uint32_t shift = static_cast<std::uint32_t>(len) - base;  // mod 2^32: the sums are exact
    for (std::size_t j = 0; j < fit; ++j) offs[k + j + 1] = so[first + j + 1] + shift;
    len += bytes;
    k += fit;
    if (k < e) break;  // the bytes are full inside this run
  }
  if (k == 0) return 0;
  if (p == 0) h.opened_ns = arrival ? arrival[idx[0]] : arrival_ns;
  // Every other column: one block copy each (consecutive indices), else a gather, several columns
  // per pass (one index load serves them all).
  std::uint64_t* d_arr = at<std::uint64_t>(slab, off_arrival_) + p;
  std::uint64_t* d_ts = at<std::uint64_t>(slab, off_ts_) + p;
  std::uint64_t* d_id = at<std::uint64_t>(slab, off_id_) + p;
  flow::FlowKey* d_key = at<flow::FlowKey>(slab, off_key_) + p;
  std::uint32_t* d_hash = at<std::uint32_t>(slab, off_hash_) + p;
  std::uint32_t* d_flow = at<std::uint32_t>(slab, off_flow_) + p;
  std::uint16_t* d_queue = at<std::uint16_t>(slab, off_queue_) + p;
  std::uint16_t* d_port = at<std::uint16_t>(slab, off_port_) + p;
  std::uint8_t* d_drop = at<std::uint8_t>(slab, off_drop_) + p;
  std::uint8_t* d_flags = at<std::uint8_t>(slab, off_flags_) + p;
  std::uint8_t* d_tcp = at<std::uint8_t>(slab, off_tcp_) + p;
  std::uint16_t* d_l3 = at<std::uint16_t>(slab, off_l3_) + p;
  std::uint16_t* d_l4 = at<std::uint16_t>(slab, off_l4_) + p;
  std::uint16_t* d_l4len = at<std::uint16_t>(slab, off_l4len_) + p;
  if (arrival == nullptr) std::fill(d_arr, d_arr + k, arrival_ns);
  if (idx[k - 1] - idx[0] == k - 1) {
    const std::size_t f = idx[0];
    auto block = [&](auto* dst, const auto& col) { std::memcpy(dst, col.data() + f, k * sizeof(*dst)); };
    if (arrival != nullptr) std::memcpy(d_arr, arrival + f, k * sizeof(std::uint64_t));
    block(d_ts, src.ts_ns);
    block(d_id, src.packet_id);
    block(d_key, src.key);
    block(d_hash, src.hash);
    block(d_flow, src.flow_id);
    block(d_queue, src.queue);
    block(d_port, src.port);
    block(d_drop, src.drop);
    block(d_flags, src.flags);
    block(d_tcp, src.tcp_flags);
    block(d_l3, src.l3_offset);
    block(d_l4, src.l4_offset);
    block(d_l4len, src.l4_len);
  } else {
    if (arrival != nullptr) {
      for (std::size_t j = 0; j < k; ++j) d_arr[j] = arrival[idx[j]];
    }
    const std::uint64_t* ts = src.ts_ns.data();
    const std::uint64_t* id = src.packet_id.data();
    const flow::FlowKey* key = src.key.data();
    const std::uint32_t* hash = src.hash.data();
    const std::uint32_t* fl = src.flow_id.data();
    const std::uint16_t* queue = src.queue.data();
    for (std::size_t j = 0; j < k; ++j) {
      const std::uint32_t i = idx[j];
      d_ts[j] = ts[i];
      d_id[j] = id[i];
      d_key[j] = key[i];
      d_hash[j] = hash[i];
      d_flow[j] = fl[i];
      d_queue[j] = queue[i];
    }
    const std::uint16_t* port = src.port.data();
    const std::uint8_t* drop = src.drop.data();
    const std::uint8_t* flags = src.flags.data();
    const std::uint8_t* tcp = src.tcp_flags.data();
    const std::uint16_t* l3 = src.l3_offset.data();
    const std::uint16_t* l4 = src.l4_offset.data();
    const std::uint16_t* l4len = src.l4_len.data();
    for (std::size_t j = 0; j < k; ++j) {
      const std::uint32_t i = idx[j];
      d_port[j] = port[i];
      d_drop[j] = drop[i];
      d_flags[j] = flags[i];
      d_tcp[j] = tcp[i];
      d_l3[j] = l3[i];
      d_l4[j] = l4[i];
      d_l4len[j] = l4len[i];
    }
  }
  h.packets = p + static_cast<std::uint32_t>(k);
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
