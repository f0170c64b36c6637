// AF_PACKET socket: config validation everywhere; a real send/receive over a veth pair when the
// test may create one (root in its own network namespace), skipped otherwise.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "vnfkit/io/af_packet.hpp"

using vnfkit::io::AfPacketConfig;
using vnfkit::io::AfPacketSocket;
using vnfkit::packet::PacketBatch;

namespace {

AfPacketConfig cfg(const std::string& ifname) {
  AfPacketConfig c;
  c.interface = ifname;
  return c;
}

PacketBatch frames(std::size_t n, std::size_t len) {
  PacketBatch b;
  b.offsets.assign(1, 0);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::uint8_t> f(len, 0);
    for (std::size_t j = 0; j < 6; ++j) f[j] = 0xff;  // broadcast
    f[6] = 0x02;                                        // locally administered source
    f[11] = static_cast<std::uint8_t>(i);
    f[12] = 0x88;  // local experimental ethertype 0x88b5
    f[13] = 0xb5;
    f[14] = static_cast<std::uint8_t>(i);
    f[len - 1] = static_cast<std::uint8_t>(0xa0 + i);
    b.append(f, 0);
  }
  return b;
}

}  // namespace

TEST(AfPacketConfig, RejectsBadFieldsByName) {
  auto expect_field = [](AfPacketConfig c, const std::string& field) {
    try {
      (void)c.validated();
      FAIL() << "accepted a bad " << field;
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind(field + ":", 0), 0u) << e.what();
    }
  };
  expect_field(cfg(""), "interface");
  expect_field(cfg("a-name-that-is-far-too-long"), "interface");
  expect_field(cfg("vnfkit-nosuch0"), "interface");
  auto c = cfg("lo");
  c.batch = 0;
  expect_field(c, "batch");
  c = cfg("lo");
  c.snaplen = 10;
  expect_field(c, "snaplen");
  c = cfg("lo");
  c.fanout_group = 70000;
  expect_field(c, "fanout_group");
  c = cfg("lo");
  c.buffer_bytes = 1;
  expect_field(c, "buffer_bytes");
  EXPECT_NO_THROW((void)cfg("lo").validated());
}

TEST(AfPacket, SetEthernetAddresses) {
  PacketBatch b = frames(3, 60);
  b.append(std::vector<std::uint8_t>(10, 0x11), 0);  // too short for an Ethernet header
  const vnfkit::io::MacAddress dst{1, 2, 3, 4, 5, 6}, src{7, 8, 9, 10, 11, 12};
  const std::uint32_t idx[] = {0, 2, 3};
  EXPECT_EQ(vnfkit::io::set_ethernet_addresses(b, idx, 3, dst, src), 2u);
  EXPECT_EQ(b.packet(0)[0], 1);
  EXPECT_EQ(b.packet(0)[11], 12);
  EXPECT_EQ(b.packet(1)[0], 0xff);  // not chosen
  EXPECT_EQ(b.packet(2)[5], 6);
  EXPECT_EQ(b.packet(3)[0], 0x11);  // short: untouched
  const std::uint32_t bad[] = {4};
  EXPECT_THROW(vnfkit::io::set_ethernet_addresses(b, bad, 1, dst, src), std::out_of_range);
}

// Runs the body in a child process inside a fresh network namespace with a veth pair, so nothing
// outside the test is touched and everything vanishes with the child.
class AfPacketVeth : public ::testing::TestWithParam<std::uint32_t> {};  // ring_blocks

TEST_P(AfPacketVeth, RoundTrip) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace and a veth pair)";
  if (std::system("command -v ip >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs iproute2's ip";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(77);
    if (std::system("ip link add vka type veth peer name vkb && ip link set vka up && ip link set vkb up") != 0) {
      _exit(78);
    }
    int rc = 0;
    try {
      AfPacketConfig ca = cfg("vka"), cb = cfg("vkb");
      cb.snaplen = 100;
      cb.ring_blocks = GetParam();
      cb.batch = 4;  // several recv() calls per ring block
      AfPacketSocket a(ca), b(cb);
      if (a.mtu() != 1500 || a.ifindex() <= 0) rc = 10;
      PacketBatch out = frames(5, 60);
      out.append(frames(1, 200).packet(0), 0);  // longer than b's snaplen
      if (a.send_all(out) != 6) rc = 11;
      const std::uint32_t two[] = {4, 1};
      if (a.send(out, two, 2) != 2) rc = 12;
      PacketBatch in;
      std::size_t got = 0;
      std::vector<std::uint8_t> seen;
      std::vector<std::size_t> lens;
      // The kernel's own frames (IPv6 neighbour discovery on a new link) are skipped: only ours count.
      auto ours = [](const PacketBatch& got_b, std::size_t i) {
        return got_b.packet(i).size() >= 15 && got_b.packet(i)[12] == 0x88 && got_b.packet(i)[13] == 0xb5;
      };
      for (int tries = 0; tries < 50 && got < 8; ++tries) {
        b.recv(in, 100);
        for (std::size_t i = 0; i < in.size(); ++i) {
          if (!ours(in, i)) continue;
          ++got;
          seen.push_back(in.packet(i)[14]);
          lens.push_back(in.packet(i).size());
        }
      }
      if (got != 8) rc = 13;
      const std::vector<std::uint8_t> want{0, 1, 2, 3, 4, 0, 4, 1};
      const std::vector<std::size_t> want_len{60, 60, 60, 60, 60, 100, 60, 60};
      if (seen != want || lens != want_len) rc = 14;
      if (b.stats().truncated != 1) rc = 15;
      b.recv(in, 0);
      for (std::size_t i = 0; i < in.size(); ++i) rc = ours(in, i) ? 16 : rc;  // nothing more of ours
      a.recv(in, 50);
      for (std::size_t i = 0; i < in.size(); ++i) rc = ours(in, i) ? 17 : rc;  // a ignores its own sends
      const std::uint32_t oob[] = {99};
      try {
        a.send(out, oob, 1);
        rc = 18;
      } catch (const std::out_of_range&) {
      }
    } catch (const std::exception& e) {
      fprintf(stderr, "%s\n", e.what());
      rc = 20;
    }
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77 || WEXITSTATUS(status) == 78) GTEST_SKIP() << "cannot create a netns / veth here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "child check failed (code " << WEXITSTATUS(status) << ")";
}

INSTANTIATE_TEST_SUITE_P(RecvmmsgAndRing, AfPacketVeth, ::testing::Values(0u, 2u));
