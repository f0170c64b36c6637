// Lock-free token-bucket rate limiters. Each bucket is one 64-bit word (the GCRA form of a token
// bucket: the "theoretical arrival time" TAT in ns), updated with one CAS per allowed packet.
// A bucket refills `rate` tokens per second up to `burst` tokens; a packet costs `cost` tokens.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

class TokenBuckets final : public SharedObject {
 public:
  struct Params {
    std::size_t buckets;
    double rate_per_s;
    double burst;
    [[nodiscard]] Params validated() const;
    [[nodiscard]] std::string describe() const;
    bool operator==(const Params&) const = default;
  };
  static std::size_t storage_bytes(const Params& p);
  static void format(void* mem, const Params& p);
  TokenBuckets(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep);
  [[nodiscard]] Params params() const noexcept { return {n_, hdr_->rate, hdr_->burst}; }

  [[nodiscard]] const char* kind() const noexcept override { return "token_buckets"; }
  [[nodiscard]] std::string slot_name(std::uint32_t slot) const override;
  [[nodiscard]] std::size_t buckets() const noexcept { return n_; }
  [[nodiscard]] std::uint64_t ns_per_token() const noexcept { return interval_; }

  // out[i] = 1 if packet i may pass (its cost was taken from bucket[i]) else 0.
  // costs may be empty (1 token each).
  void consume(Context& ctx, std::span<const std::uint64_t> buckets, std::span<const std::uint64_t> now_ns,
               std::span<const std::uint32_t> costs, std::span<const std::uint64_t> packet_ids,
               std::span<std::uint8_t> out);
  // Tokens available in a bucket at time now (control plane, unlogged).
  [[nodiscard]] double tokens(std::uint64_t bucket, std::uint64_t now_ns) const;

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const override;
  void restore(std::span<const std::uint8_t> image) override;
  void replay_begin() override;
  void replay_finish(std::span<const Observation> obs) override;

 private:
  // Returns (allowed, new TAT) for an observed TAT.
  [[nodiscard]] bool decide(std::uint64_t tat, std::uint64_t now, std::uint32_t cost, std::uint64_t& next) const noexcept;

  struct alignas(64) Header {
    std::uint64_t buckets;
    std::uint64_t interval;   // ns per token
    std::uint64_t tolerance;  // burst * interval
    double rate;
    double burst;
  };
  std::shared_ptr<void> keep_;
  Header* hdr_;
  std::size_t n_;
  std::uint64_t interval_;
  std::uint64_t tolerance_;
  std::atomic<std::uint64_t>* tat_;
  std::vector<std::uint64_t> replay_start_;
};

}  // namespace vnfkit::state
