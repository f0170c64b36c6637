// Bindings of the snapshot area's shared helpers: the CRC32C used by every snapshot and log chunk,
// offered to Python so that the recovery package frames its stable-storage records the same way.
#include "pybind.hpp"
#include "vnfkit/snapshot/snapshot.hpp"

void bind_snapshot(py::module_& m) {
  m.def(
      "crc32c",
      [](const py::buffer& data, std::uint32_t crc) {
        py::buffer_info info = data.request();
        if (info.ndim != 1 || info.itemsize != 1 || (info.ndim == 1 && info.strides[0] != 1)) {
          throw py::type_error("crc32c: data must be a contiguous bytes-like object of bytes");
        }
        const auto* p = static_cast<const std::uint8_t*>(info.ptr);
        const auto n = static_cast<std::size_t>(info.size);
        py::gil_scoped_release nogil;
        return vnfkit::snapshot::crc32c({p, n}, crc);
      },
      py::arg("data"), py::arg("crc") = 0,
      "CRC32C (Castagnoli) of `data`, continuing from `crc` (0 to start); hardware-accelerated where "
      "the CPU has SSE4.2. crc32c(b'123456789') == 0xE3069283.");
}
