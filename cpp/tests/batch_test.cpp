#include <gtest/gtest.h>

#include "vnfkit/packet/batch.hpp"

using vnfkit::packet::PacketBatch;

TEST(PacketBatch, AppendKeepsOffsetsAndColumnsConsistent) {
  PacketBatch b;
  b.clear();
  const std::uint8_t a[] = {1, 2, 3};
  const std::uint8_t c[] = {9};
  b.append(a, 10);
  b.append(c, 20);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b.offsets[1], 3u);
  EXPECT_EQ(b.packet(1).size(), 1u);
  EXPECT_EQ(b.packet(1)[0], 9);
  EXPECT_EQ(b.ts_ns[1], 20u);
  EXPECT_NO_THROW(b.validate());
  b.port.pop_back();
  EXPECT_THROW(b.validate(), std::invalid_argument);
}

TEST(FlowKey, ReversedSwapsEndpoints) {
  auto k = vnfkit::flow::make_v4_key(0x0a000001, 0x08080808, 1234, 53, 17);
  auto r = k.reversed();
  EXPECT_EQ(r.src_v4(), 0x08080808u);
  EXPECT_EQ(r.dport, 1234);
  EXPECT_EQ(r.reversed(), k);
}
