// Lock-free port (or address) pool. Every port has a 32-bit generation word: even = free,
// odd = allocated; allocate and release are one CAS each (generation + 1), so the generation a
// thread observed orders all accesses to that port across threads (what replay needs).
// Ports are split into sub-pools (e.g. by which receive queue their RSS hash maps to); each
// sub-pool keeps a free count used as a reservation, so exhaustion is reported (port 0), counted,
// and never found by scanning the whole range.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

class PortPool final : public SharedObject {
 public:
  static constexpr std::uint16_t kExhausted = 0;

  // Ports [lo, hi] (lo >= 1). subpool_of: empty (one sub-pool) or one entry per port giving its
  // sub-pool index (< 65536).
  struct Params {
    std::uint16_t lo;
    std::uint16_t hi;
    std::vector<std::uint16_t> subpool_of;  // validated(): one entry per port
    [[nodiscard]] Params validated() const;
    [[nodiscard]] std::string describe() const;
    bool operator==(const Params&) const = default;
  };
  static std::size_t storage_bytes(const Params& p);
  static void format(void* mem, const Params& p);
  PortPool(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep);
  [[nodiscard]] Params params() const;

  [[nodiscard]] const char* kind() const noexcept override { return "port_pool"; }
  [[nodiscard]] std::string slot_name(std::uint32_t slot) const override;
  [[nodiscard]] std::uint16_t lo() const noexcept { return lo_; }
  [[nodiscard]] std::uint16_t hi() const noexcept { return hi_; }
  [[nodiscard]] std::size_t subpools() const noexcept { return subs_.size(); }

  // out[i] = a free port from sub-pool subpool[i] (subpool may be empty: sub-pool 0), or 0.
  void allocate(Context& ctx, std::span<const std::uint64_t> packet_ids, std::span<const std::uint16_t> subpool,
                std::span<std::uint16_t> out);
  // out[i] = 1 if ports[i] was allocated and is now free, 0 if it was already free.
  void release(Context& ctx, std::span<const std::uint16_t> ports, std::span<const std::uint64_t> packet_ids,
               std::span<std::uint8_t> out);

  [[nodiscard]] bool is_allocated(std::uint16_t port) const;
  [[nodiscard]] std::size_t free_count(std::size_t subpool) const;
  [[nodiscard]] std::size_t allocated_count() const;
  [[nodiscard]] std::uint64_t exhausted_events() const noexcept { return exhausted_.load(std::memory_order_relaxed); }

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const override;
  void restore(std::span<const std::uint8_t> image) override;
  void replay_begin() override;
  void replay_finish(std::span<const Observation> obs) override;

 private:
  // Storage: Header | Sub[nsub] | gen[n] (u32) | sub_of[n] (u16) | ports[n] (u16, grouped by sub-pool).
  struct alignas(64) Header {
    std::uint16_t lo;
    std::uint16_t hi;
    std::uint32_t nsub;
    std::atomic<std::uint64_t> exhausted;
  };
  struct alignas(64) Sub {
    std::atomic<std::int64_t> free;
    std::atomic<std::uint32_t> cursor;
    std::uint32_t first;  // index of its first port in ports_
    std::uint32_t count;
  };
  struct Layout {
    std::size_t subs, gen, sub_of, ports, bytes;
  };
  static Layout layout(std::size_t n, std::size_t nsub) noexcept;
  [[nodiscard]] std::size_t index(std::uint16_t port) const noexcept { return port - lo_; }
  void recount() noexcept;

  std::shared_ptr<void> keep_;
  Header* hdr_;
  std::uint16_t lo_, hi_;
  std::size_t n_;
  std::span<const std::uint16_t> sub_of_;
  std::atomic<std::uint32_t>* gen_;
  std::span<Sub> subs_;
  const std::uint16_t* ports_;
  std::atomic<std::uint64_t>& exhausted_;
  std::vector<std::uint32_t> replay_start_;
};

}  // namespace vnfkit::state
