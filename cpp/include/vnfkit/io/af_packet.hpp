// AF_PACKET I/O on one network interface: batched receive into a PacketBatch and batched send of
// selected packets of a batch, so a VNF runs on live interfaces.
//
// One AfPacketSocket is a SOCK_RAW packet socket bound to one interface (all ethertypes), with the
// interface in promiscuous mode (optional; the membership is dropped when the socket closes) and
// PACKET_IGNORE_OUTGOING set, so frames this host sends on the interface are not received again.
// recv() waits up to a timeout for the socket to become readable, then takes up to `batch` frames
// with one recvmmsg(2) call into preallocated slots of `snaplen` bytes and copies them back to back
// into the caller's batch (offsets, ts_ns = CLOCK_REALTIME at the receive, packet_id counting from 0
// over the socket's life, parse columns zeroed, linktype Ethernet). Frames longer than `snaplen`
// are kept cut to `snaplen` bytes and counted in truncated(). send() hands the chosen packets of a
// batch to the kernel with sendmmsg(2) (iovecs point into the batch: no copy), `batch` at a time,
// waiting (poll) while the socket's send buffer is full; a packet the kernel refuses (longer than
// the MTU: EMSGSIZE) is counted in send_errors() and skipped.
// With ring_blocks > 0 the socket receives through a TPACKET_V3 ring mapped into the process
// (ring_blocks blocks of kRingBlockBytes, each retired by the kernel when full or after
// kRingBlockTimeoutMs): no system call per batch while blocks are ready, ts_ns = the kernel's
// receive time of each frame, at the cost of up to kRingBlockTimeoutMs of latency when traffic is
// light. recv() still hands out at most `batch` frames per call and returns a block to the kernel
// once all its frames have been copied out.
// With fanout_group >= 0 the socket joins that PACKET_FANOUT group (hash mode, flow-consistent with
// defragmentation), so several sockets -- one per worker process -- share the interface's traffic,
// every packet of a flow reaching the same one.
// Neither recv() nor send() allocates once the caller's batch has reached its size, and neither
// throws except for a socket error that is not transient (std::system_error).
// Not thread-safe: one socket per thread (or process).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vnfkit/packet/batch.hpp"

struct mmsghdr;
struct iovec;
struct sockaddr_ll;

namespace vnfkit::io {

inline constexpr std::size_t kMaxRecvBatch = 4096;
inline constexpr std::uint32_t kMinSnaplen = 64;
inline constexpr std::uint32_t kMaxSnaplen = 65535;
inline constexpr int kMaxFanoutGroup = 0xFFFF;
inline constexpr std::uint32_t kRingBlockBytes = 1u << 18;  // 256 KiB per TPACKET_V3 block
inline constexpr std::uint32_t kRingBlockTimeoutMs = 1;
inline constexpr std::uint32_t kMaxRingBlocks = 1024;

struct AfPacketConfig {
  std::string interface;          // name of an existing interface (as `ip link` shows it)
  std::uint32_t batch = 256;      // most frames per recv() and per sendmmsg call, 1..kMaxRecvBatch
  std::uint32_t snaplen = 2048;   // bytes kept per received frame, kMinSnaplen..kMaxSnaplen
  int fanout_group = -1;          // -1: no fanout; 0..65535: join that PACKET_FANOUT group (hash)
  bool promiscuous = true;        // receive frames for any destination MAC
  std::uint32_t buffer_bytes = 4u << 20;  // SO_RCVBUF and SO_SNDBUF request (the kernel may cap it)
  std::uint32_t ring_blocks = 0;  // 0: recvmmsg; 1..kMaxRingBlocks: a TPACKET_V3 receive ring

  // Throws std::invalid_argument naming the field (an unknown interface names `interface`).
  [[nodiscard]] AfPacketConfig validated() const;
};

struct AfPacketStats {
  std::uint64_t received = 0;      // frames returned by recv()
  std::uint64_t truncated = 0;     // of those, frames longer than snaplen (kept cut)
  std::uint64_t sent = 0;          // frames accepted by the kernel
  std::uint64_t send_errors = 0;   // frames the kernel refused (EMSGSIZE, ...), skipped
  std::uint64_t kernel_drops = 0;  // frames the kernel dropped before recv() (PACKET_STATISTICS)
};

class AfPacketSocket {
 public:
  // Opens and binds the socket. Throws std::invalid_argument for a bad config or unknown
  // interface, std::system_error for a socket error (errno EPERM: not root / no CAP_NET_RAW).
  explicit AfPacketSocket(const AfPacketConfig& config);
  ~AfPacketSocket();
  AfPacketSocket(const AfPacketSocket&) = delete;
  AfPacketSocket& operator=(const AfPacketSocket&) = delete;

  // Replace `out` with the frames that are ready, waiting up to timeout_ms (-1: forever, 0: not at
  // all) for the first. Returns the number received (0 on timeout or a signal).
  std::size_t recv(packet::PacketBatch& out, int timeout_ms);
  // Send packets idx[0..n) of `batch` in that order (every index < batch.size(), checked first:
  // std::out_of_range). Returns the number the kernel accepted.
  std::size_t send(const packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n);
  // Send every packet of `batch`.
  std::size_t send_all(const packet::PacketBatch& batch);

  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept { return fd_ < 0; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] int ifindex() const noexcept { return ifindex_; }
  [[nodiscard]] std::uint32_t mtu() const noexcept { return mtu_; }
  [[nodiscard]] const std::array<std::uint8_t, 6>& mac() const noexcept { return mac_; }
  [[nodiscard]] const AfPacketConfig& config() const noexcept { return cfg_; }
  // Counters; kernel_drops is read from the kernel (and reset there) on each call.
  [[nodiscard]] AfPacketStats stats();

 private:
  bool wait(short events, int timeout_ms);  // poll; false on timeout or EINTR
  std::size_t send_chunk(const packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n);
  void setup_ring();
  std::size_t recv_ring(packet::PacketBatch& out, int timeout_ms);

  AfPacketConfig cfg_;
  int fd_ = -1;
  int ifindex_ = 0;
  std::uint32_t mtu_ = 0;
  std::array<std::uint8_t, 6> mac_{};
  bool promisc_added_ = false;
  std::vector<std::uint8_t> slots_;  // batch * snaplen receive slots
  std::vector<mmsghdr> rmsg_;
  std::vector<iovec> riov_;
  std::vector<sockaddr_ll> raddr_;
  std::vector<mmsghdr> smsg_;
  std::vector<iovec> siov_;
  std::uint64_t next_id_ = 0;
  AfPacketStats stats_;
  // TPACKET_V3 ring: the mapping, the block being read, and the read position inside it
  std::uint8_t* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  std::uint32_t ring_block_ = 0;
  std::uint32_t ring_left_ = 0;              // frames of the current block not yet copied out
  const std::uint8_t* ring_next_ = nullptr;  // next frame header in the current block
};

using MacAddress = std::array<std::uint8_t, 6>;

// Write `dst` and `src` into the Ethernet header of packets idx[0..n) of `batch` (what a forwarder
// does before sending a frame on to the next hop). Packets shorter than an Ethernet header are left
// alone; returns the number rewritten. Every index < batch.size() (checked first: std::out_of_range).
std::size_t set_ethernet_addresses(packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n,
                                   const MacAddress& dst, const MacAddress& src);

}  // namespace vnfkit::io
