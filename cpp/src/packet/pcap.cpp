#include "vnfkit/packet/pcap.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace vnfkit::packet {
namespace {

constexpr std::uint32_t kMagicUs = 0xa1b2c3d4;
constexpr std::uint32_t kMagicNs = 0xa1b23c4d;
constexpr std::uint32_t kShb = 0x0A0D0D0A;
constexpr std::uint32_t kBom = 0x1A2B3C4D;
constexpr std::uint32_t kMaxBlock = 16u << 20;  // pcapng blocks beyond this are treated as corruption

inline std::uint32_t bswap32(std::uint32_t v) noexcept { return __builtin_bswap32(v); }
inline std::uint32_t load_le32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[3]} << 24);
}

}  // namespace

PcapReader::PcapReader(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "rb");
  if (!f_) throw std::system_error(errno, std::generic_category(), path);
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  std::uint8_t hdr[24];
  if (!read_exact(hdr, 4)) throw PcapError("pcap: empty file, no header", 0);
  const std::uint32_t magic = load_le32(hdr);
  if (magic == kShb) {
    ng_ = true;
    read_shb_rest(0);
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
  if (!read_exact(hdr + 4, 20)) throw PcapError("pcap: truncated file header", 4);
  snaplen_ = u32(hdr + 16);
  linktype_ = u32(hdr + 20) & 0x0FFFFFFF;
}

PcapReader::~PcapReader() {
  if (f_) std::fclose(f_);
}

bool PcapReader::read_exact(void* dst, std::size_t n) {
  if (n == 0) return true;
  const std::size_t got = std::fread(dst, 1, n, f_);
  if (got == n) {
    pos_ += n;
    return true;
  }
  if (std::ferror(f_)) throw std::system_error(errno ? errno : EIO, std::generic_category(), path_);
  if (got == 0) return false;
  throw PcapError("pcap: truncated file: wanted " + std::to_string(n) + " bytes, got " + std::to_string(got), pos_);
}

std::uint32_t PcapReader::u32(const std::uint8_t* p) const noexcept {
  const std::uint32_t v = load_le32(p);
  return swap_ ? bswap32(v) : v;
}
std::uint16_t PcapReader::u16(const std::uint8_t* p) const noexcept {
  const auto v = static_cast<std::uint16_t>(p[0] | (p[1] << 8));
  return swap_ ? static_cast<std::uint16_t>((v >> 8) | (v << 8)) : v;
}

void PcapReader::read_shb_rest(std::uint64_t start) {
  std::uint8_t h[8];
  if (!read_exact(h, 8)) throw PcapError("pcapng: truncated section header block", start + 4);
  const std::uint32_t bom = load_le32(h + 4);
  if (bom == kBom) swap_ = false;
  else if (bswap32(bom) == kBom) swap_ = true;
  else throw PcapError("pcapng: bad byte-order magic in section header block", start + 8);
  const std::uint32_t len = u32(h);
  if (len < 28 || len % 4 != 0 || len > kMaxBlock) throw PcapError("pcapng: bad section header block length", start + 4);
  block_.resize(len - 12);
  if (!read_exact(block_.data(), block_.size())) throw PcapError("pcapng: truncated section header block", pos_);
  if (u32(block_.data() + block_.size() - 4) != len) {
    throw PcapError("pcapng: section header block trailing length mismatch", pos_ - 4);
  }
  ifaces_.clear();  // interface ids are per section
}

void PcapReader::read_idb(const std::vector<std::uint8_t>& body, std::uint64_t start) {
  // body = block contents after type+length, without the trailing length.
  if (body.size() < 8) throw PcapError("pcapng: interface description block too short", start);
  Iface f;
  f.linktype = u16(body.data());
  f.snaplen = u32(body.data() + 4);
  std::size_t o = 8;
  while (o + 4 <= body.size()) {
    const std::uint16_t code = u16(body.data() + o);
    const std::uint16_t olen = u16(body.data() + o + 2);
    if (code == 0) break;
    if (o + 4 + olen > body.size()) throw PcapError("pcapng: option runs past its block", start + 8 + o);
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

bool PcapReader::next_classic(PacketBatch& out) {
  const std::uint64_t start = pos_;
  std::uint8_t h[16];
  if (!read_exact(h, 16)) return false;
  const std::uint32_t sec = u32(h);
  const std::uint32_t frac = u32(h + 4);
  const std::uint32_t caplen = u32(h + 8);
  const std::uint32_t len = u32(h + 12);
  if (caplen > kMaxCaplen) {
    throw PcapError("pcap: corrupt packet record: caplen " + std::to_string(caplen) + " exceeds " +
                        std::to_string(kMaxCaplen),
                    start + 8);
  }
  if (frac >= (nano_ ? 1000000000u : 1000000u)) {
    throw PcapError("pcap: corrupt packet record: sub-second timestamp out of range", start + 4);
  }
  if (caplen < len) ++snapped_;
  const std::size_t old = out.data.size();
  out.data.resize(old + caplen);
  if (!read_exact(out.data.data() + old, caplen) && caplen > 0) {
    throw PcapError("pcap: truncated packet record: missing packet data", pos_);
  }
  out.offsets.push_back(static_cast<std::uint32_t>(out.data.size()));
  out.ts_ns.push_back(std::uint64_t{sec} * 1000000000u + (nano_ ? frac : std::uint64_t{frac} * 1000u));
  return true;
}

bool PcapReader::next_ng(PacketBatch& out) {
  for (;;) {
    const std::uint64_t start = pos_;
    std::uint8_t h[8];
    if (!read_exact(h, 4)) return false;
    if (load_le32(h) == kShb) {
      read_shb_rest(start);
      continue;
    }
    if (!read_exact(h + 4, 4)) throw PcapError("pcapng: truncated block header", start + 4);
    const std::uint32_t type = u32(h);
    const std::uint32_t len = u32(h + 4);
    if (len < 12 || len % 4 != 0 || len > kMaxBlock) {
      throw PcapError("pcapng: bad block length " + std::to_string(len), start + 4);
    }
    block_.resize(len - 8);
    if (!read_exact(block_.data(), block_.size())) throw PcapError("pcapng: truncated block", pos_);
    if (u32(block_.data() + block_.size() - 4) != len) {
      throw PcapError("pcapng: block trailing length mismatch", pos_ - 4);
    }
    const std::size_t body_len = block_.size() - 4;
    const std::uint8_t* body = block_.data();
    if (type == 1) {
      std::vector<std::uint8_t> b(body, body + body_len);
      read_idb(b, start);
      continue;
    }
    if (type == 6) {  // enhanced packet block
      if (body_len < 20) throw PcapError("pcapng: enhanced packet block too short", start);
      const std::uint32_t ifid = u32(body);
      if (ifid >= ifaces_.size()) throw PcapError("pcapng: packet for an undeclared interface", start + 8);
      const std::uint64_t ts = (std::uint64_t{u32(body + 4)} << 32) | u32(body + 8);
      const std::uint32_t caplen = u32(body + 12);
      const std::uint32_t olen = u32(body + 16);
      if (caplen > body_len - 20 || caplen > kMaxCaplen) {
        throw PcapError("pcapng: corrupt enhanced packet block: caplen " + std::to_string(caplen), start + 20);
      }
      if (caplen < olen) ++snapped_;
      const std::size_t old = out.data.size();
      out.data.resize(old + caplen);
      if (caplen) std::memcpy(out.data.data() + old, body + 20, caplen);
      out.offsets.push_back(static_cast<std::uint32_t>(out.data.size()));
      out.ts_ns.push_back(to_ns(ifaces_[ifid], ts));
      return true;
    }
    if (type == 3) {  // simple packet block: no timestamp
      if (body_len < 4) throw PcapError("pcapng: simple packet block too short", start);
      if (ifaces_.empty()) throw PcapError("pcapng: packet before any interface description", start);
      const std::uint32_t olen = u32(body);
      std::size_t caplen = body_len - 4;
      if (olen < caplen) caplen = olen;
      if (ifaces_[0].snaplen != 0 && ifaces_[0].snaplen < caplen) caplen = ifaces_[0].snaplen;
      if (caplen > kMaxCaplen) throw PcapError("pcapng: corrupt simple packet block", start + 8);
      if (caplen < olen) ++snapped_;
      const std::size_t old = out.data.size();
      out.data.resize(old + caplen);
      if (caplen) std::memcpy(out.data.data() + old, body + 4, caplen);
      out.offsets.push_back(static_cast<std::uint32_t>(out.data.size()));
      out.ts_ns.push_back(0);
      return true;
    }
    // Any other block (name resolution, statistics, custom, ...) is skipped.
  }
}

std::size_t PcapReader::read(PacketBatch& out, std::size_t max_packets) {
  out.clear();
  if (error_) std::rethrow_exception(error_);
  std::size_t n = 0;
  try {
    while (n < max_packets) {
      if (out.data.size() > 0xFFFFFFFFull - kMaxCaplen - 1) break;  // keep offsets in 32 bits
      const bool got = ng_ ? next_ng(out) : next_classic(out);
      if (!got) break;
      ++n;
    }
  } catch (...) {
    error_ = std::current_exception();
    out.clear();
    throw;
  }
  auto ts = std::move(out.ts_ns);
  out.resize_columns(0);
  out.resize_columns(n);
  out.ts_ns = std::move(ts);
  for (std::size_t i = 0; i < n; ++i) out.packet_id[i] = next_id_ + i;
  next_id_ += n;
  return n;
}

PacketBatch read_pcap(const std::string& path) {
  PcapReader r(path);
  PacketBatch all;
  all.clear();
  PacketBatch chunk;
  while (r.read(chunk, 65536) > 0) {
    const std::size_t base = all.data.size();
    if (base + chunk.data.size() > 0xFFFFFFFFull) throw PcapError("pcap: file holds more than 4 GiB of packets; read it in chunks", 0);
    all.data.resize(base + chunk.data.size());
    if (!chunk.data.empty()) std::memcpy(all.data.data() + base, chunk.data.data(), chunk.data.size());
    for (std::size_t i = 1; i < chunk.offsets.size(); ++i) {
      all.offsets.push_back(static_cast<std::uint32_t>(base + chunk.offsets[i]));
    }
    all.ts_ns.insert(all.ts_ns.end(), chunk.ts_ns.begin(), chunk.ts_ns.end());
  }
  auto ts = std::move(all.ts_ns);
  const std::size_t n = all.offsets.size() - 1;
  all.resize_columns(0);
  all.resize_columns(n);
  all.ts_ns = std::move(ts);
  for (std::size_t i = 0; i < n; ++i) all.packet_id[i] = i;
  return all;
}

PcapWriter::PcapWriter(const std::string& path, bool nanosecond, std::uint32_t linktype, std::uint32_t snaplen)
    : path_(path), nano_(nanosecond) {
  f_ = std::fopen(path.c_str(), "wb");
  if (!f_) throw std::system_error(errno, std::generic_category(), path);
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  std::uint8_t h[24];
  const std::uint32_t magic = nanosecond ? kMagicNs : kMagicUs;
  std::memcpy(h, &magic, 4);  // native byte order, as libpcap does
  const std::uint16_t vmaj = 2, vmin = 4;
  std::memcpy(h + 4, &vmaj, 2);
  std::memcpy(h + 6, &vmin, 2);
  std::memset(h + 8, 0, 8);
  std::memcpy(h + 16, &snaplen, 4);
  std::memcpy(h + 20, &linktype, 4);
  if (std::fwrite(h, 1, 24, f_) != 24) throw std::system_error(errno, std::generic_category(), path);
}

PcapWriter::~PcapWriter() {
  if (f_) std::fclose(f_);
}

void PcapWriter::write(const PacketBatch& b) {
  if (!f_) throw std::invalid_argument("PcapWriter: write after close (the file is closed)");
  const std::size_t n = b.size();
  for (std::size_t i = 0; i < n; ++i) {
    const auto p = b.packet(i);
    const std::uint64_t ts = b.ts_ns[i];
    const std::uint32_t rec[4] = {
        static_cast<std::uint32_t>(ts / 1000000000u),
        static_cast<std::uint32_t>(nano_ ? ts % 1000000000u : (ts % 1000000000u) / 1000u),
        static_cast<std::uint32_t>(p.size() > kMaxCaplen ? kMaxCaplen : p.size()),
        static_cast<std::uint32_t>(p.size()),
    };
    if (std::fwrite(rec, 1, 16, f_) != 16 || std::fwrite(p.data(), 1, rec[2], f_) != rec[2]) {
      throw std::system_error(errno ? errno : EIO, std::generic_category(), path_);
    }
  }
  count_ += n;
}

void PcapWriter::close() {
  if (!f_) return;
  std::FILE* f = f_;
  f_ = nullptr;
  const bool bad = std::fflush(f) != 0;
  const int err = errno;
  if (std::fclose(f) != 0 || bad) throw std::system_error(err ? err : EIO, std::generic_category(), path_);
}

void write_pcap(const std::string& path, const PacketBatch& batch, bool nanosecond) {
  PcapWriter w(path, nanosecond);
  w.write(batch);
  w.close();
}

}  // namespace vnfkit::packet
