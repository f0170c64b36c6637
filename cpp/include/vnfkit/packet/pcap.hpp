// pcap / pcapng file I/O for PacketBatch.
//
// Reading: classic pcap (microsecond 0xa1b2c3d4 and nanosecond 0xa1b23c4d magic, either byte order)
// and pcapng (SHB / IDB / EPB / SPB; if_tsresol honoured; other blocks skipped; several sections
// with either byte order). A regular file is memory-mapped and its records are parsed in a tight
// loop: one pass over the record headers fills offsets and timestamps, then the packet bytes are
// copied into the batch in one go (no per-packet call, no per-packet allocation). Other files
// (pipes) are read through a large buffer. Packets are read in chunks so a large file never has to
// fit in memory. The file must not shrink while it is being read (a mapped file that shrinks
// under the reader faults, as with any mmap reader).
// Each chunk carries one link type (PacketBatch::linktype): a pcapng chunk ends early where the
// next packet's interface has another link type.
// Records whose caplen < len (snapped) are kept with the captured bytes only and counted in
// snapped(). A final record cut off by the end of the file (a capture whose writer was killed) ends
// the read cleanly after the last whole packet; truncated_offset() / truncated_bytes() say where and
// how much was left over, as tshark reports "cut short in the middle of a packet". A corrupt record
// anywhere raises PcapError whose message names the byte offset; the reader then stays failed.
// Writing: classic pcap of one link type, micro- or nanosecond timestamps; records are built into a
// 4 MiB buffer and written with large write(2) calls. A regular output file has its blocks
// preallocated ahead of the data in steps of up to 64 MiB (fallocate, file size unchanged); closing
// the writer frees what was not used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "vnfkit/packet/batch.hpp"

namespace vnfkit::packet {

class PcapError : public std::runtime_error {
 public:
  PcapError(const std::string& what, std::uint64_t offset)
      : std::runtime_error(what + " (at byte offset " + std::to_string(offset) + ")"), offset_(offset) {}
  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }

 private:
  std::uint64_t offset_;
};

// Largest caplen accepted (bigger records are treated as corruption).
inline constexpr std::uint32_t kMaxCaplen = 262144;
// truncated_offset() when the file ended on a record boundary.
inline constexpr std::uint64_t kNotTruncated = ~std::uint64_t{0};

class PcapReader {
 public:
  // Throws std::system_error (with errno) if the file cannot be opened, PcapError if the header is bad.
  explicit PcapReader(const std::string& path);
  ~PcapReader();
  PcapReader(const PcapReader&) = delete;
  PcapReader& operator=(const PcapReader&) = delete;

  // Replace `out` with up to max_packets next packets (parse columns zeroed, ts_ns set, packet_id
  // counting from 0 over the whole file, linktype set). Returns the number read (0 at end of file).
  // On an error `out` is left empty and the reader is failed: every later read() rethrows the
  // same error (it never resynchronises on a misaligned position and yields garbage records).
  std::size_t read(PacketBatch& out, std::size_t max_packets);

  [[nodiscard]] bool pcapng() const noexcept { return ng_; }
  // The file's link type (pcapng: that of the first interface; 0 before any is declared).
  [[nodiscard]] std::uint32_t linktype() const noexcept { return linktype_; }
  [[nodiscard]] std::uint64_t packets_read() const noexcept { return next_id_; }
  [[nodiscard]] std::uint64_t snapped() const noexcept { return snapped_; }
  [[nodiscard]] std::uint64_t file_size() const noexcept { return size_; }  // 0 if not a regular file
  [[nodiscard]] std::uint64_t position() const noexcept { return pos_; }    // bytes consumed so far
  [[nodiscard]] std::uint64_t truncated_offset() const noexcept { return trunc_off_; }
  [[nodiscard]] std::uint64_t truncated_bytes() const noexcept { return trunc_bytes_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  struct Iface {
    std::uint32_t linktype = 0;
    std::uint32_t snaplen = 0;
    // ns = ts * mul / div
    std::uint64_t mul = 1000;
    std::uint64_t div = 1;
    bool pow2 = false;
    std::uint32_t pow2_exp = 0;
  };
  enum class Stop { kWindow, kFull };  // scan ended at the window's end / the chunk is complete

  // Input window: file bytes [win_off_, win_off_ + win_len_) are at win_.
  [[nodiscard]] std::size_t avail() const noexcept { return static_cast<std::size_t>(win_off_ + win_len_ - pos_); }
  [[nodiscard]] const std::uint8_t* at(std::uint64_t off) const noexcept { return win_ + (off - win_off_); }
  std::size_t refill(std::size_t need);  // make >= need bytes available at pos_ unless EOF; returns avail()
  void require(std::size_t n, const char* what);  // refill(n) or throw PcapError (truncated header)

  std::uint32_t u32(const std::uint8_t* p) const noexcept;
  std::uint16_t u16(const std::uint8_t* p) const noexcept;
  template <bool Swap, bool Nano>
  Stop scan_classic(PacketBatch& out, std::size_t max_packets, std::size_t& need);
  Stop scan_ng(PacketBatch& out, std::size_t max_packets, std::size_t& need);
  void copy_scanned(PacketBatch& out, std::size_t first);
  void read_shb(std::uint64_t block_start);
  void read_idb(const std::uint8_t* body, std::size_t body_len, std::uint64_t block_start);
  std::uint64_t to_ns(const Iface& f, std::uint64_t ts) const noexcept;

  std::string path_;
  std::exception_ptr error_;  // set by the first failed read(): the reader stays failed
  int fd_ = -1;
  const std::uint8_t* map_ = nullptr;  // whole-file mapping of a regular file
  std::uint64_t size_ = 0;             // size of a regular file
  std::vector<std::uint8_t> buf_;      // read buffer when the file cannot be mapped
  bool eof_ = false;                   // buffered mode: read(2) returned 0
  const std::uint8_t* win_ = nullptr;
  std::uint64_t win_off_ = 0;
  std::uint64_t win_len_ = 0;
  std::uint64_t pos_ = 0;

  bool ng_ = false;
  bool swap_ = false;
  bool nano_ = false;
  std::uint32_t linktype_ = 0;
  std::uint32_t snaplen_ = 0;
  std::vector<Iface> ifaces_;
  Buffer<std::uint64_t> src_;  // scratch: file offset of each scanned packet's bytes (not zero-filled)
  bool chunk_has_linktype_ = false;
  std::uint64_t next_id_ = 0;
  std::uint64_t snapped_ = 0;
  std::uint64_t trunc_off_ = kNotTruncated;
  std::uint64_t trunc_bytes_ = 0;
};

// Read a whole file into one batch (one link type, at most 4 GiB of packet bytes).
PacketBatch read_pcap(const std::string& path);

class PcapWriter {
 public:
  // Throws std::system_error if the file cannot be created.
  PcapWriter(const std::string& path, bool nanosecond, std::uint32_t linktype = kLinkEthernet,
             std::uint32_t snaplen = kMaxCaplen);
  ~PcapWriter();  // flushes; errors there are lost: call close() to see them
  PcapWriter(const PcapWriter&) = delete;
  PcapWriter& operator=(const PcapWriter&) = delete;
  // Throws std::invalid_argument if batch.linktype differs from the file's, std::system_error on a
  // write error (the writer is then failed: later writes rethrow it).
  void write(const PacketBatch& batch);
  void close();  // flushes; throws std::system_error on a write error
  [[nodiscard]] std::uint64_t packets_written() const noexcept { return count_; }
  [[nodiscard]] std::uint32_t linktype() const noexcept { return linktype_; }

 private:
  void flush();
  void prealloc(std::size_t n);        // have blocks reserved for the next n bytes (best effort)
  void release_prealloc() noexcept;    // free the reserved blocks past the bytes written

  std::string path_;
  std::exception_ptr error_;  // set by the first failed write: the writer stays failed
  int fd_ = -1;
  bool prealloc_ = false;       // a regular file whose file system has accepted fallocate so far
  std::uint64_t written_ = 0;   // bytes written to the file
  std::uint64_t alloc_end_ = 0; // blocks are preallocated up to this file offset
  bool nano_;
  std::uint32_t linktype_;
  std::vector<std::uint8_t> buf_;
  std::size_t used_ = 0;
  std::uint64_t count_ = 0;
};

void write_pcap(const std::string& path, const PacketBatch& batch, bool nanosecond = false);

}  // namespace vnfkit::packet
