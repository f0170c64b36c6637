#include "vnfkit/packet/pcap.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <system_error>

namespace vnfkit::packet {
namespace {

constexpr std::uint32_t kMagicUs = 0xa1b2c3d4;
constexpr std::uint32_t kMagicNs = 0xa1b23c4d;
constexpr std::uint32_t kShb = 0x0A0D0D0A;
constexpr std::uint32_t kBom = 0x1A2B3C4D;
constexpr std::uint32_t kMaxBlock = 16u << 20;       // pcapng blocks beyond this are treated as corruption
constexpr std::size_t kReadBuf = 4u << 20;           // read(2) buffer when the file cannot be mapped
constexpr std::size_t kWriteBuf = 4u << 20;          // records are built here, then written in one call
constexpr std::uint64_t kPreallocMin = 16u << 20;    // first preallocation step of a regular output file
constexpr std::uint64_t kPreallocMax = 64u << 20;    // preallocation steps grow (doubling) up to this
constexpr std::uint64_t kMaxBatchBytes = 0xFFFFFFFFull;  // offsets are 32-bit

inline std::uint32_t bswap32(std::uint32_t v) noexcept { return __builtin_bswap32(v); }
inline std::uint32_t load_le32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = bswap32(v);
  return v;
}
inline void store_le32(std::uint8_t* p, std::uint32_t v) noexcept {
  if constexpr (std::endian::native == std::endian::big) v = bswap32(v);
  std::memcpy(p, &v, 4);
}

[[noreturn]] void throw_errno(int err, const std::string& path) {
  throw std::system_error(err ? err : EIO, std::generic_category(), path);
}

}  // namespace

PcapReader::PcapReader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw_errno(errno, path);
  try {
    struct stat st{};
    if (::fstat(fd_, &st) != 0) throw_errno(errno, path);
    if (S_ISDIR(st.st_mode)) throw_errno(EISDIR, path);
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
      size_ = static_cast<std::uint64_t>(st.st_size);
      void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (m != MAP_FAILED) {
        ::madvise(m, size_, MADV_SEQUENTIAL);
        map_ = static_cast<const std::uint8_t*>(m);
        win_ = map_;
        win_len_ = size_;
        eof_ = true;  // the window is the whole file
      }
    }
    if (refill(4) < 4) {
      if (avail() == 0) throw PcapError("pcap: empty file, no header", 0);
      throw PcapError("pcap: truncated file: no complete magic number", 0);
    }
    const std::uint32_t magic = load_le32(at(0));
    if (magic == kShb) {
      ng_ = true;
      if (refill(12) < 12) throw PcapError("pcapng: truncated section header block", 4);
      const std::uint8_t* h = at(0);
      const std::uint32_t bom = load_le32(h + 8);
      if (bom != kBom && bswap32(bom) != kBom) throw PcapError("pcapng: bad byte-order magic in section header block", 8);
      std::uint32_t len = load_le32(h + 4);
      if (bom != kBom) len = bswap32(len);
      if (len < 28 || len % 4 != 0 || len > kMaxBlock) throw PcapError("pcapng: bad section header block length", 4);
      if (refill(len) < len) throw PcapError("pcapng: truncated section header block", avail());
      read_shb(0);
      return;
    }
    if (magic == kMagicUs || magic == kMagicNs) {
      swap_ = false;
    } else if (bswap32(magic) == kMagicUs || bswap32(magic) == kMagicNs) {
      swap_ = true;
    } else {
      throw PcapError("pcap: not a pcap or pcapng file (bad magic number)", 0);
    }
    nano_ = (swap_ ? bswap32(magic) : magic) == kMagicNs;
    if (refill(24) < 24) throw PcapError("pcap: truncated file header", 4);
    snaplen_ = u32(at(16));
    linktype_ = u32(at(20)) & 0x0FFFFFFF;
    pos_ = 24;
  } catch (...) {
    if (map_) ::munmap(const_cast<std::uint8_t*>(map_), size_);
    ::close(fd_);
    throw;
  }
}

PcapReader::~PcapReader() {
  if (map_) ::munmap(const_cast<std::uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::size_t PcapReader::refill(std::size_t need) {
  std::size_t have = avail();
  if (have >= need || eof_) return have;
  // Buffered mode: keep the unread bytes, then top the buffer up with large reads.
  if (have && pos_ != win_off_) std::memmove(buf_.data(), at(pos_), have);
  if (buf_.size() < std::max(need, kReadBuf)) buf_.resize(std::max(need, kReadBuf));
  win_ = buf_.data();
  win_off_ = pos_;
  win_len_ = have;
  while (win_len_ < need) {
    const ssize_t got = ::read(fd_, buf_.data() + win_len_, buf_.size() - win_len_);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, path_);
    }
    if (got == 0) {
      eof_ = true;
      break;
    }
    win_len_ += static_cast<std::uint64_t>(got);
  }
  return avail();
}

std::uint32_t PcapReader::u32(const std::uint8_t* p) const noexcept {
  const std::uint32_t v = load_le32(p);
  return swap_ ? bswap32(v) : v;
}
std::uint16_t PcapReader::u16(const std::uint8_t* p) const noexcept {
  const auto v = static_cast<std::uint16_t>(p[0] | (p[1] << 8));
  return swap_ ? static_cast<std::uint16_t>((v >> 8) | (v << 8)) : v;
}

void PcapReader::read_shb(std::uint64_t start) {
  // The whole block is in the window (the caller checked its length).
  const std::uint8_t* h = at(start);
  swap_ = load_le32(h + 8) != kBom;
  const std::uint32_t len = u32(h + 4);
  if (u32(h + len - 4) != len) throw PcapError("pcapng: section header block trailing length mismatch", start + len - 4);
  ifaces_.clear();  // interface ids are per section
  pos_ = start + len;
}

void PcapReader::read_idb(const std::uint8_t* body, std::size_t body_len, std::uint64_t start) {
  // body = block contents after type+length, without the trailing length.
  if (body_len < 8) throw PcapError("pcapng: interface description block too short", start);
  Iface f;
  f.linktype = u16(body);
  f.snaplen = u32(body + 4);
  std::size_t o = 8;
  while (o + 4 <= body_len) {
    const std::uint16_t code = u16(body + o);
    const std::uint16_t olen = u16(body + o + 2);
    if (code == 0) break;
    if (o + 4 + olen > body_len) throw PcapError("pcapng: option runs past its block", start + 8 + o);
    if (code == 9 && olen >= 1) {  // if_tsresol
      const std::uint8_t r = body[o + 4];
      const std::uint32_t e = r & 0x7F;
      if (r & 0x80) {
        if (e > 63) throw PcapError("pcapng: unsupported if_tsresol", start + 8 + o);
        f.pow2 = true;
        f.pow2_exp = e;
      } else {
        if (e > 19) throw PcapError("pcapng: unsupported if_tsresol", start + 8 + o);
        f.mul = 1;
        f.div = 1;
        if (e <= 9) {
          for (std::uint32_t k = e; k < 9; ++k) f.mul *= 10;
        } else {
          for (std::uint32_t k = 9; k < e; ++k) f.div *= 10;
        }
      }
    }
    o += 4 + ((olen + 3u) & ~3u);
  }
  if (ifaces_.empty()) linktype_ = f.linktype;
  ifaces_.push_back(f);
}

std::uint64_t PcapReader::to_ns(const Iface& f, std::uint64_t ts) const noexcept {
  if (f.pow2) {
    // ts * 1e9 / 2^e without overflow: split ts into whole units and the remainder.
    const std::uint32_t e = f.pow2_exp;
    if (e == 0) return ts * 1000000000u;
    const std::uint64_t whole = ts >> e;
    const std::uint64_t rem = ts & ((std::uint64_t{1} << e) - 1);
    const double frac = static_cast<double>(rem) / static_cast<double>(std::uint64_t{1} << (e > 62 ? 62 : e)) /
                        (e > 62 ? 2.0 : 1.0);
    return whole * 1000000000u + static_cast<std::uint64_t>(frac * 1e9);
  }
  return ts * f.mul / f.div;
}

// Scan whole records of the window: offsets, timestamps and where each packet's bytes are. Stops at
// max_packets, before a record that would push the batch past 4 GiB, or at a record the window does
// not hold entirely (need = the bytes that record takes).
template <bool Swap, bool Nano>
PcapReader::Stop PcapReader::scan_classic(PacketBatch& out, std::size_t max_packets, std::size_t& need) {
  const std::uint8_t* base = at(pos_);
  const std::size_t av = avail();
  std::uint64_t bytes = out.offsets.back();
  std::size_t o = 0;
  Stop stop = Stop::kWindow;
  // Room for every record the window can hold (16-byte header each), written through pointers.
  const std::size_t n0 = out.ts_ns.size();
  const std::size_t most = std::min(max_packets, av / 16);
  out.offsets.resize_for_overwrite(n0 + 1 + most);
  out.ts_ns.resize_for_overwrite(n0 + most);
  src_.resize_for_overwrite(n0 + most);
  std::uint32_t* offs = out.offsets.data() + n0 + 1;
  std::uint64_t* tss = out.ts_ns.data() + n0;
  std::uint64_t* srcs = src_.data() + n0;
  std::size_t k = 0;
  constexpr std::uint32_t kFracLimit = Nano ? 1000000000u : 1000000u;
  constexpr std::uint64_t kFracMul = Nano ? 1u : 1000u;
  for (;; ++k) {
    if (k == max_packets) {
      stop = Stop::kFull;
      break;
    }
    if (av - o < 16) {
      need = 16;
      break;
    }
    std::uint32_t h[4];
    std::memcpy(h, base + o, 16);
    if constexpr (Swap) {
      for (auto& v : h) v = bswap32(v);
    }
    const std::uint32_t caplen = h[2];
    if (caplen > kMaxCaplen) {
      throw PcapError("pcap: corrupt packet record: caplen " + std::to_string(caplen) + " exceeds " +
                          std::to_string(kMaxCaplen),
                      pos_ + o + 8);
    }
    if (h[1] >= kFracLimit) {
      throw PcapError("pcap: corrupt packet record: sub-second timestamp out of range", pos_ + o + 4);
    }
    if (av - o - 16 < caplen) {
      need = 16 + std::size_t{caplen};
      break;
    }
    if (bytes + caplen > kMaxBatchBytes) {
      stop = Stop::kFull;
      break;
    }
    snapped_ += caplen < h[3];
    srcs[k] = pos_ + o + 16;
    bytes += caplen;
    offs[k] = static_cast<std::uint32_t>(bytes);
    tss[k] = std::uint64_t{h[0]} * 1000000000u + std::uint64_t{h[1]} * kFracMul;
    o += 16 + std::size_t{caplen};
  }
  pos_ += o;
  out.offsets.resize_for_overwrite(n0 + 1 + k);
  out.ts_ns.resize_for_overwrite(n0 + k);
  src_.resize_for_overwrite(n0 + k);
  return stop;
}

PcapReader::Stop PcapReader::scan_ng(PacketBatch& out, std::size_t max_packets, std::size_t& need) {
  std::uint64_t bytes = out.offsets.back();
  std::size_t k = 0;
  for (;;) {
    if (k == max_packets) return Stop::kFull;
    const std::size_t av = avail();
    if (av < 12) {
      need = 12;
      return Stop::kWindow;
    }
    const std::uint64_t start = pos_;
    const std::uint8_t* h = at(start);
    if (load_le32(h) == kShb) {
      const std::uint32_t bom = load_le32(h + 8);
      if (bom != kBom && bswap32(bom) != kBom) {
        throw PcapError("pcapng: bad byte-order magic in section header block", start + 8);
      }
      const std::uint32_t len = bom == kBom ? load_le32(h + 4) : bswap32(load_le32(h + 4));
      if (len < 28 || len % 4 != 0 || len > kMaxBlock) throw PcapError("pcapng: bad section header block length", start + 4);
      if (av < len) {
        need = len;
        return Stop::kWindow;
      }
      read_shb(start);
      continue;
    }
    const std::uint32_t type = u32(h);
    const std::uint32_t len = u32(h + 4);
    if (len < 12 || len % 4 != 0 || len > kMaxBlock) {
      throw PcapError("pcapng: bad block length " + std::to_string(len), start + 4);
    }
    if (av < len) {
      need = len;
      return Stop::kWindow;
    }
    if (u32(h + len - 4) != len) throw PcapError("pcapng: block trailing length mismatch", start + len - 4);
    const std::uint8_t* body = h + 8;
    const std::size_t body_len = len - 12;
    std::uint64_t data_at = 0;
    std::uint32_t caplen = 0;
    std::uint64_t ts = 0;
    std::uint32_t ifid = 0;
    std::uint32_t olen = 0;
    if (type == 1) {
      read_idb(body, body_len, start);
      pos_ += len;
      continue;
    }
    if (type == 6) {  // enhanced packet block
      if (body_len < 20) throw PcapError("pcapng: enhanced packet block too short", start);
      ifid = u32(body);
      if (ifid >= ifaces_.size()) throw PcapError("pcapng: packet for an undeclared interface", start + 8);
      caplen = u32(body + 12);
      olen = u32(body + 16);
      if (caplen > body_len - 20 || caplen > kMaxCaplen) {
        throw PcapError("pcapng: corrupt enhanced packet block: caplen " + std::to_string(caplen), start + 20);
      }
      ts = to_ns(ifaces_[ifid], (std::uint64_t{u32(body + 4)} << 32) | u32(body + 8));
      data_at = start + 28;
    } else if (type == 3) {  // simple packet block: no timestamp
      if (body_len < 4) throw PcapError("pcapng: simple packet block too short", start);
      if (ifaces_.empty()) throw PcapError("pcapng: packet before any interface description", start);
      olen = u32(body);
      std::size_t cap = body_len - 4;
      if (olen < cap) cap = olen;
      if (ifaces_[0].snaplen != 0 && ifaces_[0].snaplen < cap) cap = ifaces_[0].snaplen;
      if (cap > kMaxCaplen) throw PcapError("pcapng: corrupt simple packet block", start + 8);
      caplen = static_cast<std::uint32_t>(cap);
      data_at = start + 12;
    } else {
      pos_ += len;  // any other block (name resolution, statistics, custom, ...) is skipped
      continue;
    }
    const std::uint32_t lt = ifaces_[ifid].linktype;
    if (!chunk_has_linktype_) {
      out.linktype = lt;
      chunk_has_linktype_ = true;
    } else if (lt != out.linktype) {
      return Stop::kFull;  // a chunk holds one link type: this packet starts the next one
    }
    if (bytes + caplen > kMaxBatchBytes) return Stop::kFull;
    if (caplen < olen) ++snapped_;
    src_.push_back(data_at);
    bytes += caplen;
    out.offsets.push_back(static_cast<std::uint32_t>(bytes));
    out.ts_ns.push_back(ts);
    pos_ += len;
    ++k;
  }
}

void PcapReader::copy_scanned(PacketBatch& out, std::size_t first) {
  const std::size_t n = out.offsets.size() - 1;
  if (n == first) return;
  out.data.resize_for_overwrite(out.offsets[n]);  // every byte is copied in below
  std::uint8_t* dst = out.data.data();
  const std::uint32_t* offs = out.offsets.data();
  const std::uint64_t* src = src_.data();
  for (std::size_t j = first; j < n; ++j) std::memcpy(dst + offs[j], at(src[j]), offs[j + 1] - offs[j]);
}

std::size_t PcapReader::read(PacketBatch& out, std::size_t max_packets) {
  out.clear();
  if (error_) std::rethrow_exception(error_);
  try {
    src_.clear();
    chunk_has_linktype_ = false;
    out.linktype = linktype_;
    const std::size_t hint = std::min<std::size_t>(max_packets, (map_ ? size_ - pos_ : kReadBuf) / 16 + 1);
    src_.reserve(hint);
    out.offsets.reserve(hint + 1);
    out.ts_ns.reserve(hint);
    for (;;) {
      std::size_t need = 0;
      const std::size_t first = out.offsets.size() - 1;
      const std::size_t room = max_packets - first;
      Stop stop;
      if (ng_) {
        stop = scan_ng(out, room, need);
      } else if (swap_) {
        stop = nano_ ? scan_classic<true, true>(out, room, need) : scan_classic<true, false>(out, room, need);
      } else {
        stop = nano_ ? scan_classic<false, true>(out, room, need) : scan_classic<false, false>(out, room, need);
      }
      copy_scanned(out, first);  // before refill(), which moves a buffered window
      if (stop == Stop::kFull) break;
      if (refill(need) >= need) continue;
      if (avail() > 0 && trunc_off_ == kNotTruncated) {  // a cut-off final record: keep what came before
        trunc_off_ = pos_;
        trunc_bytes_ = avail();
        pos_ += avail();
      }
      break;
    }
  } catch (...) {
    error_ = std::current_exception();
    out.clear();
    throw;
  }
  const std::size_t n = out.offsets.size() - 1;
  // The parse columns start zeroed (a reused batch holds old values); timestamps and ids are set
  // here, so they are put aside while the others are sized (and not zeroed only to be overwritten).
  out.packet_id.resize_for_overwrite(n);
  for (std::size_t i = 0; i < n; ++i) out.packet_id[i] = next_id_ + i;
  next_id_ += n;
  Buffer<std::uint64_t> ts, ids;
  ts.swap(out.ts_ns);
  ids.swap(out.packet_id);
  out.resize_columns(0);
  out.ts_ns.swap(ts);
  out.packet_id.swap(ids);
  out.resize_columns(n);  // ts_ns and packet_id already hold n: untouched
  return n;
}

PacketBatch read_pcap(const std::string& path) {
  PcapReader r(path);
  PacketBatch all;
  r.read(all, std::numeric_limits<std::size_t>::max());
  PacketBatch more;
  const std::uint64_t at = r.position();
  if (r.read(more, 1) > 0) {
    throw PcapError("pcap: the file holds packets of several link types or more than 4 GiB of them; "
                    "read it in chunks (vnfkit.packets.iter_pcap)", at);
  }
  return all;
}

PcapWriter::PcapWriter(const std::string& path, bool nanosecond, std::uint32_t linktype, std::uint32_t snaplen)
    : path_(path), nano_(nanosecond), linktype_(linktype) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) throw_errno(errno, path);
  struct stat st{};
  prealloc_ = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  buf_.resize(kWriteBuf);
  std::uint8_t* h = buf_.data();
  const std::uint32_t magic = nanosecond ? kMagicNs : kMagicUs;
  std::memcpy(h, &magic, 4);  // native byte order, as libpcap does
  const std::uint16_t vmaj = 2, vmin = 4;
  std::memcpy(h + 4, &vmaj, 2);
  std::memcpy(h + 6, &vmin, 2);
  std::memset(h + 8, 0, 8);
  std::memcpy(h + 16, &snaplen, 4);
  std::memcpy(h + 20, &linktype, 4);
  used_ = 24;
}

PcapWriter::~PcapWriter() {
  if (fd_ < 0) return;
  try {
    if (!error_) flush();
  } catch (...) {  // a destructor cannot report it; close() does
  }
  release_prealloc();
  ::close(fd_);
}

void PcapWriter::prealloc(std::size_t n) {
  // Blocks are reserved ahead of the data (FALLOC_FL_KEEP_SIZE: the file size stays that of the
  // bytes written, so a writer killed midway leaves a readable file). On ext4 a write into
  // preallocated blocks skips the delayed-allocation bookkeeping of every page, which is most of
  // the kernel's cost of writing a new file. A file system that cannot preallocate (or is full)
  // just stops it: write(2) then reports any real error.
  if (!prealloc_ || written_ + n <= alloc_end_) return;
  const std::uint64_t step = std::clamp<std::uint64_t>(alloc_end_, kPreallocMin, kPreallocMax);
  const std::uint64_t end = std::max<std::uint64_t>(alloc_end_ + step, written_ + n);
  if (::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(alloc_end_), static_cast<off_t>(end - alloc_end_)) != 0) {
    prealloc_ = false;
    return;
  }
  alloc_end_ = end;
}

void PcapWriter::release_prealloc() noexcept {
  // Truncating to the size written frees the preallocated blocks past the end of the file.
  // Failing to is harmless to the contents (only disk space stays reserved), so it is not an error.
  if (alloc_end_ > written_) {
    while (::ftruncate(fd_, static_cast<off_t>(written_)) != 0 && errno == EINTR) {
    }
  }
  alloc_end_ = 0;
}

void PcapWriter::flush() {
  prealloc(used_);
  std::size_t o = 0;
  while (o < used_) {
    const ssize_t w = ::write(fd_, buf_.data() + o, used_ - o);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, path_);
    }
    o += static_cast<std::size_t>(w);
    written_ += static_cast<std::uint64_t>(w);
  }
  used_ = 0;
}

void PcapWriter::write(const PacketBatch& b) {
  if (fd_ < 0) throw std::invalid_argument("PcapWriter: write after close (the file is closed)");
  if (error_) std::rethrow_exception(error_);
  if (b.linktype != linktype_) {
    throw std::invalid_argument("batch: its linktype " + std::to_string(b.linktype) + " differs from the file's " +
                                std::to_string(linktype_) + " (open the writer with linktype=batch.linktype)");
  }
  const std::size_t n = b.size();
  const std::uint8_t* data = b.data.data();
  const std::uint32_t* offs = b.offsets.data();
  const std::uint64_t* ts = b.ts_ns.data();
  try {
    std::uint8_t* buf = buf_.data();
    const std::size_t cap = buf_.size();
    std::size_t used = used_;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t len = offs[i + 1] - offs[i];
      const std::uint32_t caplen = len > kMaxCaplen ? kMaxCaplen : len;
      if (used + 16 + caplen > cap) {
        used_ = used;
        flush();
        used = 0;
      }
      const std::uint64_t t = ts[i];
      const std::uint64_t sec = t / 1000000000u;
      const std::uint64_t sub = t - sec * 1000000000u;
      const std::uint32_t rec[4] = {static_cast<std::uint32_t>(sec),
                                    static_cast<std::uint32_t>(nano_ ? sub : sub / 1000u), caplen, len};
      std::memcpy(buf + used, rec, 16);  // native byte order, matching the file header's magic
      std::memcpy(buf + used + 16, data + offs[i], caplen);
      used += 16 + std::size_t{caplen};
    }
    used_ = used;
  } catch (...) {
    error_ = std::current_exception();
    throw;
  }
  count_ += n;
}

void PcapWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  if (error_) {  // already reported by write()
    release_prealloc();
    fd_ = -1;
    ::close(fd);
    return;
  }
  try {
    flush();
  } catch (...) {
    release_prealloc();
    fd_ = -1;
    ::close(fd);
    throw;
  }
  release_prealloc();
  fd_ = -1;
  if (::close(fd) != 0) throw_errno(errno, path_);
}

void write_pcap(const std::string& path, const PacketBatch& batch, bool nanosecond) {
  PcapWriter w(path, nanosecond, batch.linktype);
  w.write(batch);
  w.close();
}

}  // namespace vnfkit::packet
