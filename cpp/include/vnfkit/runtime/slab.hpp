// Slab: one batch of packets laid out contiguously in a SlabRing slab, columns first, then bytes.
//
//   [SlabHeader][offsets: max+1 u32][arrival_ns u64][ts_ns u64][packet_id u64][key][hash u32]...
//   [... every other PacketBatch column, max entries each][packet bytes: data_capacity]
//
// Each region starts on a 64-byte boundary. The dispatcher appends packets of a parsed batch into
// an open slab (one copy per run of consecutive packets for the bytes and for each column, a gather
// for scattered ones), the worker wraps the slab as a PacketBatch over external memory (no copy: a
// VNF's in-place writes land in the slab), and after process() `store` writes back any column the
// VNF reallocated (e.g. a payload rewrite that rebuilt the data buffer). `arrival_ns` is the
// runtime's own column: when the dispatcher received each packet, for latency from arrival to release.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::runtime {

struct SlabHeader {
  std::uint32_t packets;    // packets in the slab
  std::uint32_t data_len;   // bytes of packet data used
  std::uint64_t opened_ns;  // arrival time of the slab's oldest packet (dispatcher's clock)
};

class SlabLayout {
 public:
  // Layout for slabs of `slab_bytes` holding up to `max_packets`. Throws std::invalid_argument
  // (naming the field) if the columns leave no room for packet bytes.
  SlabLayout(std::uint32_t max_packets, std::uint64_t slab_bytes);

  [[nodiscard]] std::uint32_t max_packets() const noexcept { return max_; }
  [[nodiscard]] std::uint64_t data_capacity() const noexcept { return data_cap_; }
  [[nodiscard]] std::uint64_t slab_bytes() const noexcept { return slab_bytes_; }

  static SlabHeader& header(std::byte* slab) noexcept { return *reinterpret_cast<SlabHeader*>(slab); }
  [[nodiscard]] std::uint64_t* arrival(std::byte* slab) const noexcept {
    return reinterpret_cast<std::uint64_t*>(slab + off_arrival_);
  }
  // The slab's port and drop columns (what the worker decided), for accounting at release.
  [[nodiscard]] const std::uint16_t* port(const std::byte* slab) const noexcept {
    return reinterpret_cast<const std::uint16_t*>(slab + off_port_);
  }
  [[nodiscard]] const std::uint8_t* drop(const std::byte* slab) const noexcept {
    return reinterpret_cast<const std::uint8_t*>(slab + off_drop_);
  }

  // Empty the slab (0 packets).
  void reset(std::byte* slab) const noexcept;
  // Append packets src[idx[0]], ..., src[idx[n-1]] (all columns), as many as fit (max_packets,
  // data_capacity); returns how many were appended. Packet src[i] arrived at arrival[i] if
  // `arrival` is given (a paced source's schedule), else at `arrival_ns`. `idx` entries must be
  // < src.size() (the caller validates).
  std::size_t append(std::byte* slab, const packet::PacketBatch& src, const std::uint32_t* idx, std::size_t n,
                     std::uint64_t arrival_ns, const std::uint64_t* arrival = nullptr) const noexcept;
  // A batch whose columns and bytes are the slab's memory; `keep` keeps that memory mapped.
  [[nodiscard]] packet::PacketBatch wrap(std::byte* slab, const std::shared_ptr<void>& keep) const;
  // Write back into the slab every column of `b` (a batch made by wrap) that no longer lives there,
  // and the packet count and data length. Returns false, touching nothing, if `b` outgrew the slab.
  bool store(std::byte* slab, const packet::PacketBatch& b) const noexcept;
  // Copy of the slab's packets as an owned batch.
  [[nodiscard]] packet::PacketBatch copy(std::byte* slab) const;

 private:
  std::uint32_t max_;
  std::uint64_t slab_bytes_;
  std::uint64_t data_cap_ = 0;
  std::size_t off_offsets_ = 0, off_arrival_ = 0, off_ts_ = 0, off_id_ = 0, off_key_ = 0, off_hash_ = 0,
              off_flow_ = 0, off_queue_ = 0, off_port_ = 0, off_drop_ = 0, off_flags_ = 0, off_tcp_ = 0,
              off_l3_ = 0, off_l4_ = 0, off_l4len_ = 0, off_data_ = 0;
};

}  // namespace vnfkit::runtime
