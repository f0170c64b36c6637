#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <system_error>
#include <vector>

#include "vnfkit/packet/build.hpp"
#include "vnfkit/packet/pcap.hpp"

using namespace vnfkit::packet;

namespace {

std::string tmp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string("vnfkit_pcap_test_") + name)).string();
}

PacketBatch sample(std::size_t n) {
  std::vector<vnfkit::flow::FlowKey> keys(n);
  std::vector<std::uint16_t> sizes(n);
  std::vector<std::uint64_t> ts(n);
  std::vector<std::uint8_t> tf(n, 0x10);
  std::vector<std::uint32_t> seq(n);
  for (std::size_t i = 0; i < n; ++i) {
    keys[i] = vnfkit::flow::make_v4_key(0x0a000000u + static_cast<std::uint32_t>(i), 0x01020304, 1000, 80, 6);
    sizes[i] = static_cast<std::uint16_t>(60 + i % 100);
    ts[i] = 1700000000123456789ull + i * 1001;
  }
  return build_packets(keys.data(), sizes.data(), ts.data(), tf.data(), seq.data(), n);
}

}  // namespace

TEST(Pcap, RoundTripMicroAndNano) {
  const PacketBatch b = sample(1000);
  for (bool nano : {false, true}) {
    const auto path = tmp_path(nano ? "ns.pcap" : "us.pcap");
    write_pcap(path, b, nano);
    PcapReader r(path);
    PacketBatch all;
    PacketBatch chunk;
    std::size_t total = 0;
    while (const std::size_t got = r.read(chunk, 300)) {
      ASSERT_LE(got, 300u);
      for (std::size_t i = 0; i < got; ++i) {
        const auto p = chunk.packet(i);
        const auto q = b.packet(total + i);
        ASSERT_TRUE(std::equal(p.begin(), p.end(), q.begin(), q.end()));
        const std::uint64_t want = nano ? b.ts_ns[total + i] : b.ts_ns[total + i] / 1000 * 1000;
        ASSERT_EQ(chunk.ts_ns[i], want);
        ASSERT_EQ(chunk.packet_id[i], total + i);
      }
      total += got;
    }
    EXPECT_EQ(total, 1000u);
    std::filesystem::remove(path);
  }
}

TEST(Pcap, CutOffLastRecordKeepsWholePacketsAndNamesOffset) {
  // As when tcpdump is killed mid-write: the whole packets before the cut are read, and the reader
  // says where the cut-off record starts and how many bytes it ignored.
  const auto path = tmp_path("trunc.pcap");
  write_pcap(path, sample(3), false);
  std::filesystem::resize_file(path, 24 + 16 + 60 + 16 + 10);  // cut the second record's data
  PcapReader r(path);
  PacketBatch b;
  EXPECT_EQ(r.read(b, 100), 1u);
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(r.read(b, 100), 0u);
  EXPECT_EQ(r.truncated_offset(), 24u + 16 + 60);
  EXPECT_EQ(r.truncated_bytes(), 16u + 10);
  std::filesystem::remove(path);
}

TEST(Pcap, MissingFileIsSystemError) {
  try {
    PcapReader r("/nonexistent/dir/x.pcap");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
  }
}

TEST(Pcap, GarbageIsRejected) {
  const auto path = tmp_path("garbage.pcap");
  {
    std::ofstream f(path, std::ios::binary);
    f << "this is not a capture file at all";
  }
  EXPECT_THROW(read_pcap(path), PcapError);
  std::filesystem::remove(path);
}

TEST(Pcap, FuzzedFilesEitherReadOrRaisePcapError) {
  const auto good = tmp_path("fuzz_src.pcap");
  write_pcap(good, sample(20), true);
  std::vector<char> raw;
  {
    std::ifstream f(good, std::ios::binary);
    raw.assign(std::istreambuf_iterator<char>(f), {});
  }
  // A small pcapng (SHB + IDB with if_tsresol + EPB + SPB), built by hand.
  const std::uint8_t ng[] = {
      0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFF, 0xFF, 0xFF, 0xFF, 28, 0, 0, 0,
      1, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0,
      6, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0,
      0xde, 0xad, 0xbe, 0xef, 36, 0, 0, 0,
      3, 0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4, 20, 0, 0, 0};
  std::mt19937 rng(99);
  const auto path = tmp_path("fuzz.pcap");
  for (int round = 0; round < 600; ++round) {
    std::vector<char> f;
    if (round % 2) {
      f = raw;
    } else {
      f.assign(reinterpret_cast<const char*>(ng), reinterpret_cast<const char*>(ng) + sizeof ng);
    }
    const int muts = static_cast<int>(rng() % 4);
    for (int k = 0; k < muts; ++k) f[rng() % f.size()] = static_cast<char>(rng());
    f.resize(rng() % (f.size() + 1));
    {
      std::ofstream o(path, std::ios::binary | std::ios::trunc);
      o.write(f.data(), static_cast<std::streamsize>(f.size()));
    }
    try {
      PcapReader r(path);
      PacketBatch b;
      while (r.read(b, 7) > 0) ASSERT_NO_THROW(b.validate());
    } catch (const PcapError&) {
      // expected for corrupt input
    }
  }
  std::filesystem::remove(path);
  std::filesystem::remove(good);
}
