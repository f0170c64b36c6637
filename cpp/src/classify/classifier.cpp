#include "vnfkit/classify/classifier.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vnfkit::classify {

namespace {
std::span<const std::uint8_t> key_or_default(const std::vector<std::uint8_t>& key) {
  if (key.empty()) return kMicrosoftRssKey;
  return key;
}
}  // namespace

MultiQueueClassifier::MultiQueueClassifier(const ClassifierConfig& config)
    : toeplitz_(key_or_default(config.key)),
      reta_(config.reta_size, config.num_queues),
      symmetric_(config.symmetric),
      use_ports_(config.use_ports) {}

void MultiQueueClassifier::classify(packet::PacketBatch& b, std::uint32_t* order,
                                    std::uint32_t* queue_offsets) const {
  const std::size_t n = b.size();
  if (b.key.size() != n || b.hash.size() != n || b.flow_id.size() != n || b.queue.size() != n ||
      b.drop.size() != n || b.flags.size() != n) {
    throw std::invalid_argument("batch: columns do not match the number of packets");
  }
  if (n > 0xFFFFFFFFull) throw std::invalid_argument("batch: more than 2^32 packets");
  const std::size_t nq = reta_.num_queues();
  std::array<std::uint32_t, kMaxQueues + 1> count{};  // count[q + 1] = packets of queue q

  const flow::FlowKey* keys = b.key.data();
  const std::uint8_t* drop = b.drop.data();
  const std::uint8_t* flags = b.flags.data();
  std::uint32_t* hash = b.hash.data();
  std::uint32_t* flow_id = b.flow_id.data();
  std::uint16_t* queue = b.queue.data();

  // Pass 1: hash, flow id, queue, per-queue counts.
  for (std::size_t i = 0; i < n; ++i) {
    const flow::FlowKey& k = keys[i];
    if (drop[i] != 0 || (k.family != 4 && k.family != 6)) {
      hash[i] = 0;
      flow_id[i] = 0;
      queue[i] = 0;
      ++count[1];
      continue;
    }
    const bool p = hashes_ports(k, flags[i]);
    std::uint32_t h, sym;
    if (k.family == 4) {
      // The symmetric hash is the hash of the canonically ordered endpoints: the same value when
      // the key is already in that order, so one Toeplitz pass serves both then.
      const std::uint32_t s = k.src_v4(), d = k.dst_v4();
      const bool swap = s > d || (s == d && p && k.sport > k.dport);
      sym = swap ? toeplitz_.hash_v4(d, s, k.dport, k.sport, p) : toeplitz_.hash_v4(s, d, k.sport, k.dport, p);
      h = symmetric_ || !swap ? sym : toeplitz_.hash_v4(s, d, k.sport, k.dport, p);
    } else {
      sym = toeplitz_.hash_key_symmetric(k, p);
      h = symmetric_ ? sym : toeplitz_.hash_key(k, p);
    }
    const std::uint16_t q = reta_.lookup(h);
    hash[i] = h;
    flow_id[i] = sym;
    queue[i] = q;
    ++count[q + 1u];
  }
  // Prefix sums -> start offsets.
  queue_offsets[0] = 0;
  for (std::size_t q = 0; q < nq; ++q) queue_offsets[q + 1] = queue_offsets[q] + count[q + 1];
  // Pass 2: stable scatter of the indices (count[] reused as write cursors).
  for (std::size_t q = 0; q < nq; ++q) count[q] = queue_offsets[q];
  for (std::size_t i = 0; i < n; ++i) order[count[queue[i]]++] = static_cast<std::uint32_t>(i);
}

std::size_t MultiQueueClassifier::ports_for_queue(const flow::FlowKey& reply, std::uint16_t port_lo,
                                                  std::uint16_t port_hi, std::size_t queue,
                                                  std::uint16_t* out) const {
  if (port_lo > port_hi) {
    throw std::invalid_argument("port range: low (" + std::to_string(port_lo) + ") > high (" +
                                std::to_string(port_hi) + ")");
  }
  if (queue >= reta_.num_queues()) {
    throw std::invalid_argument("queue: " + std::to_string(queue) + " must be < num_queues (" +
                                std::to_string(reta_.num_queues()) + ")");
  }
  if (reply.family != 4 && reply.family != 6) {
    throw std::invalid_argument("reply key: family must be 4 or 6");
  }
  std::size_t found = 0;
  flow::FlowKey k = reply;
  k.dport = 0;
  if (!hashes_ports(k, 0)) {
    // The port takes no part in the hash: the whole range or nothing.
    if (reta_.lookup(hash_of(k, 0)) != queue) return 0;
    for (std::uint32_t p = port_lo; p <= port_hi; ++p) out[found++] = static_cast<std::uint16_t>(p);
    return found;
  }
  const std::size_t alen = k.family == 4 ? 4 : 16;
  const int c = std::memcmp(k.src.data(), k.dst.data(), alen);
  const std::size_t port_base = k.family == 4 ? kV4PortOffset : kV6PortOffset;
  if (symmetric_ && c == 0) {
    // Equal addresses: the canonical order depends on the ports themselves; hash each one.
    for (std::uint32_t p = port_lo; p <= port_hi; ++p) {
      k.dport = static_cast<std::uint16_t>(p);
      if (reta_.lookup(hash_of(k, 0)) == queue) out[found++] = static_cast<std::uint16_t>(p);
    }
    return found;
  }
  // The free port sits at the dport position, or at the sport position if symmetric mode swaps
  // the endpoints (public address < remote address).
  const bool swapped = symmetric_ && c > 0;
  const std::size_t pos = port_base + (swapped ? 0 : 2);
  const std::uint32_t base = hash_of(k, 0);  // free port = 0 contributes nothing
  for (std::uint32_t p = port_lo; p <= port_hi; ++p) {
    const std::uint32_t h = base ^ toeplitz_.contribution16(pos, static_cast<std::uint16_t>(p));
    if (reta_.lookup(h) == queue) out[found++] = static_cast<std::uint16_t>(p);
  }
  return found;
}

}  // namespace vnfkit::classify
