#include "vnfkit/state/buffer.hpp"

#include <cstring>
#include <stdexcept>

#include "vnfkit/snapshot/snapshot.hpp"

namespace vnfkit::state {

SharedBuffer::Params SharedBuffer::Params::validated() const {
  if (nbytes == 0 || nbytes > (1ull << 36)) throw std::invalid_argument("nbytes: must be in [1, 2^36]");
  return *this;
}

std::string SharedBuffer::Params::describe() const { return "buffer(nbytes=" + std::to_string(nbytes) + ")"; }

void SharedBuffer::format(void* mem, const Params& p) { std::memcpy(mem, &p.nbytes, sizeof(std::uint64_t)); }

SharedBuffer::SharedBuffer(std::string name, std::uint16_t id, void* mem, std::shared_ptr<void> keep)
    : SharedObject(std::move(name), id), keep_(std::move(keep)), data_(static_cast<std::uint8_t*>(mem) + 64) {
  std::uint64_t n = 0;
  std::memcpy(&n, mem, sizeof n);
  n_ = static_cast<std::size_t>(n);
}

std::vector<std::uint8_t> SharedBuffer::snapshot() const {
  snapshot::Writer w("buffer");
  w.reserve(8 + n_);
  w.put_array<std::uint8_t>({data_, n_});
  return w.finish();
}

void SharedBuffer::restore(std::span<const std::uint8_t> image) {
  snapshot::Reader r(image, "buffer");
  const auto b = r.get_array<std::uint8_t>(n_);
  r.expect_end();
  if (b.size() != n_) throw snapshot::SnapshotError("buffer '" + name() + "': snapshot has " + std::to_string(b.size()) + " bytes, not " + std::to_string(n_));
  std::memcpy(data_, b.data(), n_);
}

}  // namespace vnfkit::state
