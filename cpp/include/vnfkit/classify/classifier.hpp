// MultiQueueClassifier: RSS in software. For every packet of a PacketBatch it computes the Toeplitz
// hash of the parsed key, a direction-independent 32-bit flow ID, and the receive queue
// (reta[hash & (reta_size - 1)]), and splits the batch into per-queue index lists in one call.
//
// Conventions:
// - Ports are hashed iff use_ports is set, the protocol is TCP (6) or UDP (17), and the packet is
//   not an IP fragment (PacketFlag kFlagFragment, first fragment included) -- so every fragment of
//   a datagram lands on the queue of its unfragmented 2-tuple, as NICs do. Otherwise the input is
//   src | dst only.
// - Packets with drop != 0 or family == 0 are not hashed: hash = 0, flow_id = 0, queue = 0, and they
//   appear in queue 0's index list (the lists always partition the batch).
// - flow_id is the symmetric Toeplitz hash (see toeplitz.hpp) of the same input under the same key,
//   so both directions of a flow share it. In symmetric mode, flow_id == hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vnfkit/classify/reta.hpp"
#include "vnfkit/classify/toeplitz.hpp"
#include "vnfkit/flow/flow_key.hpp"
#include "vnfkit/packet/batch.hpp"

namespace vnfkit::classify {

struct ClassifierConfig {
  std::size_t num_queues = 1;        // 1..1024
  std::vector<std::uint8_t> key;     // empty = kMicrosoftRssKey; else 40..64 bytes
  bool symmetric = false;
  std::size_t reta_size = 128;       // power of two, 1..65536
  bool use_ports = true;
};

class MultiQueueClassifier {
 public:
  // Throws std::invalid_argument naming the bad field.
  explicit MultiQueueClassifier(const ClassifierConfig& config);

  [[nodiscard]] std::size_t num_queues() const noexcept { return reta_.num_queues(); }
  [[nodiscard]] bool symmetric() const noexcept { return symmetric_; }
  [[nodiscard]] bool use_ports() const noexcept { return use_ports_; }
  [[nodiscard]] const Toeplitz& toeplitz() const noexcept { return toeplitz_; }
  [[nodiscard]] Reta& reta() noexcept { return reta_; }
  [[nodiscard]] const Reta& reta() const noexcept { return reta_; }

  // Whether the ports of this key take part in its hash (see the conventions above).
  [[nodiscard]] bool hashes_ports(const flow::FlowKey& k, std::uint8_t flags) const noexcept {
    return use_ports_ && (k.proto == 6 || k.proto == 17) &&
           (flags & packet::kFlagFragment) == 0;
  }
  [[nodiscard]] std::uint32_t hash_of(const flow::FlowKey& k, std::uint8_t flags) const noexcept {
    const bool p = hashes_ports(k, flags);
    return symmetric_ ? toeplitz_.hash_key_symmetric(k, p) : toeplitz_.hash_key(k, p);
  }
  [[nodiscard]] std::uint16_t queue_of(std::uint32_t hash) const noexcept { return reta_.lookup(hash); }

  // Writes b.hash, b.flow_id and b.queue for every packet, and the per-queue split:
  // queue q's packet indices, in arrival order, are order[queue_offsets[q] .. queue_offsets[q+1]).
  // order: b.size() entries; queue_offsets: num_queues() + 1 entries. Throws std::invalid_argument
  // (before touching anything) if the batch columns are inconsistent.
  void classify(packet::PacketBatch& b, std::uint32_t* order, std::uint32_t* queue_offsets) const;

  // Predictable RSS for a NAT. `reply` is the reply-direction tuple (src = remote address,
  // dst = public address, sport = remote port, proto; its dport is ignored). Writes to `out` (room
  // for port_hi - port_lo + 1 entries), in increasing order, every port p in [port_lo, port_hi] such
  // that the packet `reply` with dport = p is classified to `queue`; returns how many. Uses the
  // linearity of Toeplitz: h(p) = h(0) ^ contribution(p). Throws std::invalid_argument if
  // port_lo > port_hi, queue >= num_queues or reply.family is not 4/6.
  std::size_t ports_for_queue(const flow::FlowKey& reply, std::uint16_t port_lo,
                              std::uint16_t port_hi, std::size_t queue, std::uint16_t* out) const;

 private:
  Toeplitz toeplitz_;
  Reta reta_;
  bool symmetric_;
  bool use_ports_;
};

}  // namespace vnfkit::classify
