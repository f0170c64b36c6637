// Generic lock-free shared registers: 32-bit values, each packed with a 32-bit version in one
// 64-bit atomic word. Every mutation (store, exchange, add, compare-exchange) bumps the version,
// so the version a thread observed orders the accesses across threads for replay.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

enum class RegOp : std::uint8_t { kLoad, kStore, kExchange, kAdd, kCas };

class Registers final : public SharedObject {
 public:
  struct Params {
    std::size_t slots;
    std::uint32_t initial;
    [[nodiscard]] Params validated() const;
    [[nodiscard]] std::string describe() const;
    bool operator==(const Params&) const = default;
  };
  static std::size_t storage_bytes(const Params& p);
  static void format(void* mem, const Params& p);
  Registers(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep);
  [[nodiscard]] Params params() const noexcept { return {n_, hdr_->initial}; }

  [[nodiscard]] const char* kind() const noexcept override { return "registers"; }
  [[nodiscard]] std::size_t slots() const noexcept { return n_; }

  // One batch of accesses; out[i] = the value before the access (the value for kLoad).
  // kStore/kExchange: a = new value; kAdd: a = delta; kCas: a = expected, b = desired (success
  // iff out[i] == a). Unused argument spans may be empty.
  void access(Context& ctx, RegOp op, std::span<const std::uint64_t> slots, std::span<const std::uint32_t> a,
              std::span<const std::uint32_t> b, std::span<const std::uint64_t> packet_ids,
              std::span<std::uint32_t> out);

  [[nodiscard]] std::uint32_t get(std::size_t slot) const;
  [[nodiscard]] std::uint32_t version(std::size_t slot) const;

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const override;
  void restore(std::span<const std::uint8_t> image) override;
  void replay_begin() override;
  void replay_finish(std::span<const Observation> obs) override;

 private:
  struct alignas(64) Header {
    std::uint64_t slots;
    std::uint32_t initial;
  };
  std::shared_ptr<void> keep_;
  Header* hdr_;
  std::size_t n_;
  std::atomic<std::uint64_t>* word_;
  std::vector<std::uint64_t> replay_start_;
};

}  // namespace vnfkit::state
