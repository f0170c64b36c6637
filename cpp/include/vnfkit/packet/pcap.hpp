// pcap / pcapng file I/O for PacketBatch.
//
// Reading: classic pcap (microsecond 0xa1b2c3d4 and nanosecond 0xa1b23c4d magic, either byte order)
// and pcapng (SHB / IDB / EPB / SPB; if_tsresol honoured; other blocks skipped; several sections
// with either byte order). Packets are read in chunks so a large file never has to fit in memory.
// Records whose caplen < len (snapped) are kept with the captured bytes only and counted in
// snapped(). A corrupt or truncated file raises PcapError whose message names the byte offset.
// Writing: classic pcap, Ethernet linktype, micro- or nanosecond timestamps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
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

class PcapReader {
 public:
  // Throws std::system_error (with errno) if the file cannot be opened, PcapError if the header is bad.
  explicit PcapReader(const std::string& path);
  ~PcapReader();
  PcapReader(const PcapReader&) = delete;
  PcapReader& operator=(const PcapReader&) = delete;

  // Replace `out` with up to max_packets next packets (parse columns zeroed, ts_ns set, packet_id
  // counting from 0 over the whole file). Returns the number read (0 at end of file).
  // On an error `out` is left empty and the reader is failed: every later read() rethrows the
  // same error (it never resynchronises on a misaligned position and yields garbage records).
  std::size_t read(PacketBatch& out, std::size_t max_packets);

  [[nodiscard]] bool pcapng() const noexcept { return ng_; }
  [[nodiscard]] std::uint32_t linktype() const noexcept { return linktype_; }
  [[nodiscard]] std::uint64_t packets_read() const noexcept { return next_id_; }
  [[nodiscard]] std::uint64_t snapped() const noexcept { return snapped_; }
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
  bool read_exact(void* dst, std::size_t n);  // false on clean EOF before any byte; throws if partial
  std::uint32_t u32(const std::uint8_t* p) const noexcept;
  std::uint16_t u16(const std::uint8_t* p) const noexcept;
  bool next_classic(PacketBatch& out);
  bool next_ng(PacketBatch& out);
  void read_shb_rest(std::uint64_t block_start);
  void read_idb(const std::vector<std::uint8_t>& body, std::uint64_t block_start);
  std::uint64_t to_ns(const Iface& f, std::uint64_t ts) const noexcept;

  std::string path_;
  std::exception_ptr error_;  // set by the first failed read(): the reader stays failed
  std::FILE* f_ = nullptr;
  std::uint64_t pos_ = 0;
  bool ng_ = false;
  bool swap_ = false;
  bool nano_ = false;
  std::uint32_t linktype_ = 0;
  std::uint32_t snaplen_ = 0;
  std::vector<Iface> ifaces_;
  std::vector<std::uint8_t> block_;
  std::uint64_t next_id_ = 0;
  std::uint64_t snapped_ = 0;
};

// Read a whole file into one batch.
PacketBatch read_pcap(const std::string& path);

class PcapWriter {
 public:
  // Throws std::system_error if the file cannot be created.
  PcapWriter(const std::string& path, bool nanosecond, std::uint32_t linktype = 1, std::uint32_t snaplen = kMaxCaplen);
  ~PcapWriter();
  PcapWriter(const PcapWriter&) = delete;
  PcapWriter& operator=(const PcapWriter&) = delete;
  void write(const PacketBatch& batch);
  void close();  // flushes; throws std::system_error on a write error
  [[nodiscard]] std::uint64_t packets_written() const noexcept { return count_; }

 private:
  std::string path_;
  std::exception_ptr error_;  // set by the first failed read(): the reader stays failed
  std::FILE* f_ = nullptr;
  bool nano_;
  std::uint64_t count_ = 0;
};

void write_pcap(const std::string& path, const PacketBatch& batch, bool nanosecond = false);

}  // namespace vnfkit::packet
