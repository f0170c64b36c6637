#include "vnfkit/io/af_packet.hpp"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <system_error>

namespace vnfkit::io {

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// Retries of a full send buffer / device queue (10 ms apart) before the packet is counted as a
// send error and skipped, so a dead link cannot stall the caller for long.
constexpr int kMaxSendStalls = 20;

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

AfPacketConfig AfPacketConfig::validated() const {
  if (interface.empty()) throw std::invalid_argument("interface: must be a non-empty interface name");
  if (interface.size() >= IFNAMSIZ) {
    throw std::invalid_argument("interface: '" + interface + "' is longer than " + std::to_string(IFNAMSIZ - 1) +
                                " characters");
  }
  if (batch < 1 || batch > kMaxRecvBatch) {
    throw std::invalid_argument("batch: must be in 1.." + std::to_string(kMaxRecvBatch) + ", got " +
                                std::to_string(batch));
  }
  if (snaplen < kMinSnaplen || snaplen > kMaxSnaplen) {
    throw std::invalid_argument("snaplen: must be in " + std::to_string(kMinSnaplen) + ".." +
                                std::to_string(kMaxSnaplen) + ", got " + std::to_string(snaplen));
  }
  if (fanout_group < -1 || fanout_group > kMaxFanoutGroup) {
    throw std::invalid_argument("fanout_group: must be -1 (none) or in 0..65535, got " + std::to_string(fanout_group));
  }
  if (buffer_bytes < 65536 || buffer_bytes > (1u << 30)) {
    throw std::invalid_argument("buffer_bytes: must be in 65536..2**30, got " + std::to_string(buffer_bytes));
  }
  if (ring_blocks > kMaxRingBlocks) {
    throw std::invalid_argument("ring_blocks: must be 0 (recvmmsg) or in 1.." + std::to_string(kMaxRingBlocks) +
                                ", got " + std::to_string(ring_blocks));
  }
  if (if_nametoindex(interface.c_str()) == 0) {
    throw std::invalid_argument("interface: no interface named '" + interface + "' in this network namespace");
  }
  return *this;
}

AfPacketSocket::AfPacketSocket(const AfPacketConfig& config) : cfg_(config.validated()) {
  const std::string on = "AF_PACKET socket on '" + cfg_.interface + "'";
  fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd_ < 0) throw_errno(errno, on);
  try {
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, cfg_.interface.c_str(), cfg_.interface.size() + 1);
    if (::ioctl(fd_, SIOCGIFINDEX, &ifr) < 0) {
      if (errno == ENODEV) throw std::invalid_argument("interface: no interface named '" + cfg_.interface + "'");
      throw_errno(errno, on + ": SIOCGIFINDEX");
    }
    ifindex_ = ifr.ifr_ifindex;
    if (::ioctl(fd_, SIOCGIFHWADDR, &ifr) < 0) throw_errno(errno, on + ": SIOCGIFHWADDR");
    std::memcpy(mac_.data(), ifr.ifr_hwaddr.sa_data, mac_.size());
    if (::ioctl(fd_, SIOCGIFMTU, &ifr) < 0) throw_errno(errno, on + ": SIOCGIFMTU");
    mtu_ = static_cast<std::uint32_t>(ifr.ifr_mtu);

    int one = 1;
    // Frames this host transmits on the interface are not looped back to this socket (Linux 4.20+).
    if (::setsockopt(fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) {
      throw_errno(errno, on + ": PACKET_IGNORE_OUTGOING");
    }
    int bytes = static_cast<int>(cfg_.buffer_bytes);
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    (void)::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);

    if (cfg_.ring_blocks > 0) setup_ring();  // before bind, so no frame lands outside the ring

    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex_;
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&sll), sizeof sll) < 0) throw_errno(errno, on + ": bind");

    if (cfg_.promiscuous) {
      packet_mreq mr{};
      mr.mr_ifindex = ifindex_;
      mr.mr_type = PACKET_MR_PROMISC;
      if (::setsockopt(fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
        throw_errno(errno, on + ": PACKET_ADD_MEMBERSHIP promiscuous");
      }
      promisc_added_ = true;
    }
    if (cfg_.fanout_group >= 0) {
      const int arg = cfg_.fanout_group | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16);
      if (::setsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) < 0) {
        throw_errno(errno, on + ": PACKET_FANOUT group " + std::to_string(cfg_.fanout_group));
      }
    }
    // Drain whatever arrived between socket() and bind() (frames of any interface).
    std::uint8_t scratch[64];
    while (::recv(fd_, scratch, sizeof scratch, MSG_DONTWAIT | MSG_TRUNC) >= 0) {
    }
  } catch (...) {
    close();
    throw;
  }

  const std::size_t b = cfg_.batch;
  slots_.resize(b * cfg_.snaplen);
  rmsg_.resize(b);
  riov_.resize(b);
  raddr_.resize(b);
  smsg_.resize(b);
  siov_.resize(b);
  for (std::size_t i = 0; i < b; ++i) {
    riov_[i].iov_base = slots_.data() + i * cfg_.snaplen;
    riov_[i].iov_len = cfg_.snaplen;
  }
}

AfPacketSocket::~AfPacketSocket() { close(); }

void AfPacketSocket::setup_ring() {
  const std::string on = "AF_PACKET socket on '" + cfg_.interface + "'";
  int version = TPACKET_V3;
  if (::setsockopt(fd_, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0) {
    throw_errno(errno, on + ": PACKET_VERSION TPACKET_V3");
  }
  tpacket_req3 req{};
  req.tp_block_size = kRingBlockBytes;
  req.tp_block_nr = cfg_.ring_blocks;
  req.tp_frame_size = 2048;  // only sets tp_frame_nr: V3 frames are variable-sized inside a block
  req.tp_frame_nr = (kRingBlockBytes / req.tp_frame_size) * cfg_.ring_blocks;
  req.tp_retire_blk_tov = kRingBlockTimeoutMs;
  if (::setsockopt(fd_, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) {
    throw_errno(errno, on + ": PACKET_RX_RING");
  }
  ring_bytes_ = static_cast<std::size_t>(kRingBlockBytes) * cfg_.ring_blocks;
  void* m = ::mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd_, 0);
  if (m == MAP_FAILED) m = ::mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) throw_errno(errno, on + ": mmap of the receive ring");
  ring_ = static_cast<std::uint8_t*>(m);
}

void AfPacketSocket::close() noexcept {
  if (ring_ != nullptr) {
    ::munmap(ring_, ring_bytes_);
    ring_ = nullptr;
  }
  if (fd_ < 0) return;
  ::close(fd_);  // also drops the promiscuous membership and leaves the fanout group
  fd_ = -1;
}

bool AfPacketSocket::wait(short events, int timeout_ms) {
  pollfd p{fd_, events, 0};
  const int r = ::poll(&p, 1, timeout_ms);
  if (r < 0) {
    if (errno == EINTR) return false;
    throw_errno(errno, "AF_PACKET socket on '" + cfg_.interface + "': poll");
  }
  if (r > 0 && (p.revents & (POLLERR | POLLNVAL))) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == ENETDOWN || err == 0) return r > 0 && (p.revents & events);
    throw_errno(err, "AF_PACKET socket on '" + cfg_.interface + "'");
  }
  return r > 0;
}

std::size_t AfPacketSocket::recv(packet::PacketBatch& out, int timeout_ms) {
  if (fd_ < 0) throw std::logic_error("AF_PACKET socket on '" + cfg_.interface + "' is closed");
  out.data.clear();
  out.offsets.assign(1, 0);
  out.resize_columns(0);
  out.linktype = packet::kLinkEthernet;
  if (ring_ != nullptr) return recv_ring(out, timeout_ms);
  if (timeout_ms != 0 && !wait(POLLIN, timeout_ms)) return 0;

  const std::size_t b = cfg_.batch;
  for (std::size_t i = 0; i < b; ++i) {
    msghdr& h = rmsg_[i].msg_hdr;
    std::memset(&h, 0, sizeof h);
    h.msg_name = &raddr_[i];
    h.msg_namelen = sizeof(sockaddr_ll);
    h.msg_iov = &riov_[i];
    h.msg_iovlen = 1;
    rmsg_[i].msg_len = 0;
  }
  int got = ::recvmmsg(fd_, rmsg_.data(), static_cast<unsigned>(b), MSG_DONTWAIT | MSG_TRUNC, nullptr);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENETDOWN) return 0;
    throw_errno(errno, "AF_PACKET socket on '" + cfg_.interface + "': recvmmsg");
  }
  const std::uint64_t now = realtime_ns();
  // One pass for sizes, then one allocation, then the copies.
  std::size_t total = 0;
  std::size_t kept = 0;
  for (int i = 0; i < got; ++i) {
    if (raddr_[static_cast<std::size_t>(i)].sll_pkttype == PACKET_OUTGOING) continue;  // belt and braces
    total += std::min<std::size_t>(rmsg_[static_cast<std::size_t>(i)].msg_len, cfg_.snaplen);
    ++kept;
  }
  out.data.resize(total);
  out.offsets.resize(kept + 1);
  out.resize_columns(kept);
  std::size_t pos = 0;
  std::size_t k = 0;
  for (int i = 0; i < got; ++i) {
    const auto u = static_cast<std::size_t>(i);
    if (raddr_[u].sll_pkttype == PACKET_OUTGOING) continue;
    const std::size_t wire = rmsg_[u].msg_len;
    const std::size_t len = std::min<std::size_t>(wire, cfg_.snaplen);
    if (wire > cfg_.snaplen) ++stats_.truncated;
    std::memcpy(out.data.data() + pos, slots_.data() + u * cfg_.snaplen, len);
    pos += len;
    out.offsets[k + 1] = static_cast<std::uint32_t>(pos);
    out.ts_ns[k] = now;
    out.packet_id[k] = next_id_++;
    ++k;
  }
  stats_.received += kept;
  return kept;
}

std::size_t AfPacketSocket::recv_ring(packet::PacketBatch& out, int timeout_ms) {
  auto block = [this](std::uint32_t i) {
    return reinterpret_cast<tpacket_block_desc*>(ring_ + static_cast<std::size_t>(i) * kRingBlockBytes);
  };
  auto user_owned = [&](std::uint32_t i) {
    return (__atomic_load_n(&block(i)->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) != 0;
  };
  if (ring_left_ == 0 && !user_owned(ring_block_)) {
    if (timeout_ms == 0 || !wait(POLLIN, timeout_ms) || !user_owned(ring_block_)) return 0;
  }
  // Pass 1: count frames and bytes from the read position on, over the ready blocks, without
  // consuming anything. Pass 2 copies the same frames and hands emptied blocks back.
  const std::size_t limit = cfg_.batch;
  std::size_t count = 0, total = 0;
  {
    std::uint32_t blk = ring_block_, left = ring_left_;
    const std::uint8_t* next = ring_next_;
    while (count < limit) {
      if (left == 0) {
        if (!user_owned(blk)) break;
        tpacket_block_desc* d = block(blk);
        left = d->hdr.bh1.num_pkts;
        next = reinterpret_cast<const std::uint8_t*>(d) + d->hdr.bh1.offset_to_first_pkt;
        if (left == 0) {  // an empty retired block: skip it
          blk = (blk + 1) % cfg_.ring_blocks;
          if (blk == ring_block_) break;
          continue;
        }
      }
      const auto* h = reinterpret_cast<const tpacket3_hdr*>(next);
      total += std::min<std::size_t>(h->tp_snaplen, cfg_.snaplen);
      ++count;
      next += h->tp_next_offset;
      if (--left == 0) {
        blk = (blk + 1) % cfg_.ring_blocks;
        if (blk == ring_block_) break;  // went all the way round
      }
    }
  }
  out.data.resize(total);
  out.offsets.resize(count + 1);
  out.resize_columns(count);
  std::size_t pos = 0;
  for (std::size_t k = 0; k < count;) {
    if (ring_left_ == 0) {
      tpacket_block_desc* d = block(ring_block_);
      ring_left_ = d->hdr.bh1.num_pkts;
      ring_next_ = reinterpret_cast<const std::uint8_t*>(d) + d->hdr.bh1.offset_to_first_pkt;
      if (ring_left_ == 0) {
        __atomic_store_n(&d->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        ring_block_ = (ring_block_ + 1) % cfg_.ring_blocks;
        continue;
      }
    }
    const auto* h = reinterpret_cast<const tpacket3_hdr*>(ring_next_);
    const std::size_t len = std::min<std::size_t>(h->tp_snaplen, cfg_.snaplen);
    if (h->tp_len > len) ++stats_.truncated;
    std::memcpy(out.data.data() + pos, ring_next_ + h->tp_mac, len);
    pos += len;
    out.offsets[k + 1] = static_cast<std::uint32_t>(pos);
    out.ts_ns[k] = static_cast<std::uint64_t>(h->tp_sec) * 1'000'000'000ull + h->tp_nsec;
    out.packet_id[k] = next_id_++;
    ++k;
    ring_next_ += h->tp_next_offset;
    if (--ring_left_ == 0) {  // every frame of the block copied out: give it back to the kernel
      __atomic_store_n(&block(ring_block_)->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
      ring_block_ = (ring_block_ + 1) % cfg_.ring_blocks;
    }
  }
  stats_.received += count;
  return count;
}

std::size_t AfPacketSocket::send_chunk(const packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t p = idx[i];
    siov_[i].iov_base = const_cast<std::uint8_t*>(batch.data.data() + batch.offsets[p]);
    siov_[i].iov_len = batch.offsets[p + 1] - batch.offsets[p];
    msghdr& h = smsg_[i].msg_hdr;
    std::memset(&h, 0, sizeof h);
    h.msg_iov = &siov_[i];
    h.msg_iovlen = 1;  // the socket is bound: no address needed
    smsg_[i].msg_len = 0;
  }
  std::size_t done = 0;
  std::size_t sent = 0;
  int stalls = 0;  // consecutive attempts without progress
  while (done < n) {
    const int r = ::sendmmsg(fd_, smsg_.data() + done, static_cast<unsigned>(n - done), MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<std::size_t>(r);
      sent += static_cast<std::size_t>(r);
      stalls = 0;
      continue;
    }
    const int err = errno;
    const bool transient = err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR;
    if (transient && ++stalls <= kMaxSendStalls) {
      if (err != EINTR) wait(POLLOUT, 10);  // the send buffer (or the device queue) is full: wait for room
      continue;
    }
    if (transient || err == EMSGSIZE || err == EINVAL || err == ENETDOWN || err == ENXIO) {
      stalls = 0;
      ++stats_.send_errors;  // the first packet of the rest was refused: skip it
      ++done;
      continue;
    }
    throw_errno(err, "AF_PACKET socket on '" + cfg_.interface + "': sendmmsg");
  }
  stats_.sent += sent;
  return sent;
}

std::size_t AfPacketSocket::send(const packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n) {
  if (fd_ < 0) throw std::logic_error("AF_PACKET socket on '" + cfg_.interface + "' is closed");
  const std::size_t size = batch.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (idx[i] >= size) {
      throw std::out_of_range("indices: index " + std::to_string(idx[i]) + " is out of range for a batch of " +
                              std::to_string(size) + " packets");
    }
  }
  std::size_t sent = 0;
  for (std::size_t at = 0; at < n; at += cfg_.batch) {
    sent += send_chunk(batch, idx + at, std::min<std::size_t>(cfg_.batch, n - at));
  }
  return sent;
}

std::size_t AfPacketSocket::send_all(const packet::PacketBatch& batch) {
  if (fd_ < 0) throw std::logic_error("AF_PACKET socket on '" + cfg_.interface + "' is closed");
  std::uint32_t idx[64];
  std::size_t sent = 0;
  const std::size_t n = batch.size();
  for (std::size_t at = 0; at < n;) {
    const std::size_t m = std::min<std::size_t>({64, cfg_.batch, n - at});
    for (std::size_t i = 0; i < m; ++i) idx[i] = static_cast<std::uint32_t>(at + i);
    sent += send_chunk(batch, idx, m);
    at += m;
  }
  return sent;
}

AfPacketStats AfPacketSocket::stats() {
  if (fd_ >= 0) {
    tpacket_stats st{};
    socklen_t len = sizeof st;
    if (ring_ != nullptr) {
      tpacket_stats_v3 st3{};
      socklen_t len3 = sizeof st3;
      if (::getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st3, &len3) == 0) stats_.kernel_drops += st3.tp_drops;
      return stats_;
    }
    if (::getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) stats_.kernel_drops += st.tp_drops;
  }
  return stats_;
}

std::size_t set_ethernet_addresses(packet::PacketBatch& batch, const std::uint32_t* idx, std::size_t n,
                                   const MacAddress& dst, const MacAddress& src) {
  const std::size_t size = batch.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (idx[i] >= size) {
      throw std::out_of_range("indices: index " + std::to_string(idx[i]) + " is out of range for a batch of " +
                              std::to_string(size) + " packets");
    }
  }
  std::size_t done = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t p = idx[i];
    if (batch.offsets[p + 1] - batch.offsets[p] < 14) continue;
    std::uint8_t* h = batch.data.data() + batch.offsets[p];
    std::memcpy(h, dst.data(), 6);
    std::memcpy(h + 6, src.data(), 6);
    ++done;
  }
  return done;
}

}  // namespace vnfkit::io
