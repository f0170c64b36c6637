// A raw shared byte region (zero-initialised, 64-byte aligned) for state that manages its own
// layout with atomics, e.g. the WAN optimizer's payload cache (ring, stamps, fingerprint table and
// its atomic write position). vnfkit does not look inside: no determinants are logged for it, a
// snapshot is a plain copy of the bytes, and replay leaves it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vnfkit/state/context.hpp"

namespace vnfkit::state {

class SharedBuffer final : public SharedObject {
 public:
  struct Params {
    std::size_t nbytes;
    [[nodiscard]] Params validated() const;
    [[nodiscard]] std::string describe() const;
    bool operator==(const Params&) const = default;
  };
  static std::size_t storage_bytes(const Params& p) { return 64 + p.nbytes; }
  static void format(void* mem, const Params& p);
  SharedBuffer(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep);
  [[nodiscard]] Params params() const noexcept { return {n_}; }

  [[nodiscard]] const char* kind() const noexcept override { return "buffer"; }
  [[nodiscard]] std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }

  [[nodiscard]] std::vector<std::uint8_t> snapshot() const override;
  void restore(std::span<const std::uint8_t> image) override;
  void replay_begin() override {}
  void replay_finish(std::span<const Observation>) override {}

 private:
  std::shared_ptr<void> keep_;
  std::size_t n_;
  std::uint8_t* data_;
};

}  // namespace vnfkit::state
