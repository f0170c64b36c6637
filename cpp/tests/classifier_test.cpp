#include "vnfkit/classify/classifier.hpp"

#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <vector>

using vnfkit::classify::ClassifierConfig;
using vnfkit::classify::MultiQueueClassifier;
using vnfkit::flow::FlowKey;
using vnfkit::packet::PacketBatch;

namespace {

PacketBatch make_batch(std::size_t n, std::uint64_t seed) {
  PacketBatch b;
  b.clear();
  const std::vector<std::uint8_t> pkt(64, 0);
  for (std::size_t i = 0; i < n; ++i) b.append(pkt, i);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < n; ++i) {
    const auto r = rng();
    b.key[i] = vnfkit::flow::make_v4_key(static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(r >> 32),
                                         static_cast<std::uint16_t>(rng()), static_cast<std::uint16_t>(rng()),
                                         (i % 3 == 0) ? 17 : 6);
    if (i % 5 == 0) {  // some IPv6
      b.key[i].family = 6;
      for (auto& x : b.key[i].src) x = static_cast<std::uint8_t>(rng());
    }
  }
  return b;
}

}  // namespace

TEST(Classifier, SplitPartitionsTheBatchAndAgreesWithReta) {
  ClassifierConfig cfg;
  cfg.num_queues = 5;
  const MultiQueueClassifier c(cfg);
  PacketBatch b = make_batch(1000, 1);
  b.drop[3] = 1;           // dropped -> queue 0, hash 0
  b.key[4].family = 0;     // not IP -> queue 0, hash 0
  b.flags[6] = vnfkit::packet::kFlagFragment;
  std::vector<std::uint32_t> order(b.size()), offs(cfg.num_queues + 1);
  c.classify(b, order.data(), offs.data());
  EXPECT_EQ(offs.front(), 0u);
  EXPECT_EQ(offs.back(), b.size());
  std::vector<int> seen(b.size(), 0);
  for (std::size_t q = 0; q < cfg.num_queues; ++q) {
    for (std::uint32_t j = offs[q]; j < offs[q + 1]; ++j) {
      const std::uint32_t i = order[j];
      ++seen[i];
      EXPECT_EQ(b.queue[i], q);
      if (j > offs[q]) {
        EXPECT_LT(order[j - 1], i);  // arrival order
      }
    }
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 3 || i == 4) {
      EXPECT_EQ(b.hash[i], 0u);
      EXPECT_EQ(b.queue[i], 0u);
      EXPECT_EQ(b.flow_id[i], 0u);
      continue;
    }
    const bool ports = i != 6;
    EXPECT_EQ(b.hash[i], c.toeplitz().hash_key(b.key[i], ports));
    EXPECT_EQ(b.queue[i], c.reta().lookup(b.hash[i]));
    EXPECT_EQ(b.flow_id[i], c.toeplitz().hash_key_symmetric(b.key[i], ports));
  }
}

TEST(Classifier, FlowIdIsDirectionIndependentAndSymmetricHashEqualsIt) {
  ClassifierConfig cfg;
  cfg.num_queues = 8;
  cfg.symmetric = true;
  const MultiQueueClassifier c(cfg);
  PacketBatch b = make_batch(200, 2);
  PacketBatch r = make_batch(200, 2);
  for (std::size_t i = 0; i < r.size(); ++i) r.key[i] = b.key[i].reversed();
  std::vector<std::uint32_t> order(200), offs(9);
  c.classify(b, order.data(), offs.data());
  c.classify(r, order.data(), offs.data());
  EXPECT_EQ(b.hash, r.hash);
  EXPECT_EQ(b.flow_id, r.flow_id);
  EXPECT_EQ(b.queue, r.queue);
  EXPECT_EQ(b.hash, b.flow_id);
}

TEST(Classifier, PortsForQueueMatchesBruteForce) {
  for (bool symmetric : {false, true}) {
    for (std::uint8_t family : {std::uint8_t{4}, std::uint8_t{6}}) {
      ClassifierConfig cfg;
      cfg.num_queues = 6;
      cfg.symmetric = symmetric;
      const MultiQueueClassifier c(cfg);
      FlowKey reply = vnfkit::flow::make_v4_key(0x08080808u, 0xC6336401u, 443, 0, 6);
      if (family == 6) {
        reply.family = 6;
        reply.src[15] = 9;
        reply.dst[15] = 1;
      }
      for (std::size_t q = 0; q < 6; ++q) {
        std::vector<std::uint16_t> out(65536 - 50000);
        const std::size_t n = c.ports_for_queue(reply, 50000, 65535, q, out.data());
        out.resize(n);
        std::vector<std::uint16_t> want;
        for (std::uint32_t p = 50000; p <= 65535; ++p) {
          FlowKey k = reply;
          k.dport = static_cast<std::uint16_t>(p);
          if (c.queue_of(c.hash_of(k, 0)) == q) want.push_back(static_cast<std::uint16_t>(p));
        }
        EXPECT_EQ(out, want);
        EXPECT_GT(n, 0u);
      }
    }
  }
}

TEST(Classifier, RejectsBadConfig) {
  ClassifierConfig cfg;
  cfg.num_queues = 0;
  EXPECT_THROW(MultiQueueClassifier{cfg}, std::invalid_argument);
  cfg.num_queues = 1025;
  EXPECT_THROW(MultiQueueClassifier{cfg}, std::invalid_argument);
  cfg.num_queues = 4;
  cfg.reta_size = 48;
  EXPECT_THROW(MultiQueueClassifier{cfg}, std::invalid_argument);
  cfg.reta_size = 128;
  cfg.key.assign(20, 1);
  EXPECT_THROW(MultiQueueClassifier{cfg}, std::invalid_argument);
  cfg.key.clear();
  const MultiQueueClassifier c(cfg);
  FlowKey k = vnfkit::flow::make_v4_key(1, 2, 3, 4, 6);
  std::vector<std::uint16_t> out(10);
  EXPECT_THROW((void)c.ports_for_queue(k, 10, 5, 0, out.data()), std::invalid_argument);
  EXPECT_THROW((void)c.ports_for_queue(k, 1, 5, 4, out.data()), std::invalid_argument);
  k.family = 0;
  EXPECT_THROW((void)c.ports_for_queue(k, 1, 5, 0, out.data()), std::invalid_argument);
}

TEST(Classifier, HashAndFlowIdMatchTheToeplitzDefinitionInEveryEndpointOrder) {
  for (bool symmetric : {false, true}) {
    ClassifierConfig cfg;
    cfg.num_queues = 4;
    cfg.symmetric = symmetric;
    const MultiQueueClassifier c(cfg);
    PacketBatch b = make_batch(12, 3);
    // canonical, swapped, and equal addresses with the ports in either order, TCP/UDP and fragments
    const std::uint32_t lo = 0x0A000001u, hi = 0xC0A80001u;
    const FlowKey keys[] = {
        vnfkit::flow::make_v4_key(lo, hi, 1000, 80, 6),   vnfkit::flow::make_v4_key(hi, lo, 80, 1000, 6),
        vnfkit::flow::make_v4_key(lo, lo, 1000, 80, 17),  vnfkit::flow::make_v4_key(lo, lo, 80, 1000, 17),
        vnfkit::flow::make_v4_key(lo, lo, 80, 80, 6),     vnfkit::flow::make_v4_key(hi, lo, 5, 7, 1),
        vnfkit::flow::make_v4_key(lo, hi, 7, 5, 1),       vnfkit::flow::make_v4_key(hi, lo, 9, 3, 17),
        vnfkit::flow::make_v4_key(lo, lo, 9, 3, 17),      vnfkit::flow::make_v4_key(hi, hi, 3, 9, 6),
        vnfkit::flow::make_v4_key(hi, lo, 443, 2000, 6),  vnfkit::flow::make_v4_key(lo, hi, 2000, 443, 6)};
    for (std::size_t i = 0; i < b.size(); ++i) b.key[i] = keys[i];
    b.flags[7] = vnfkit::packet::kFlagFragment;  // addresses only
    b.flags[8] = vnfkit::packet::kFlagFragment;
    std::vector<std::uint32_t> order(b.size()), offs(cfg.num_queues + 1);
    c.classify(b, order.data(), offs.data());
    for (std::size_t i = 0; i < b.size(); ++i) {
      const bool ports = c.hashes_ports(b.key[i], b.flags[i]);
      const std::uint32_t sym = c.toeplitz().hash_key_symmetric(b.key[i], ports);
      EXPECT_EQ(b.flow_id[i], sym) << i;
      EXPECT_EQ(b.hash[i], symmetric ? sym : c.toeplitz().hash_key(b.key[i], ports)) << i;
      EXPECT_EQ(b.queue[i], c.reta().lookup(b.hash[i])) << i;
      // the symmetric hash is the plain hash of whichever endpoint order is canonical
      const FlowKey r = b.key[i].reversed();
      EXPECT_TRUE(sym == c.toeplitz().hash_key(b.key[i], ports) || sym == c.toeplitz().hash_key(r, ports)) << i;
    }
    EXPECT_EQ(b.flow_id[0], b.flow_id[1]);
    EXPECT_EQ(b.flow_id[2], b.flow_id[3]);
  }
}
