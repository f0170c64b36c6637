// Bridge for live packet I/O: AF_PACKET sockets on network interfaces.
#include <cerrno>
#include <memory>
#include <string>
#include <system_error>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/io/af_packet.hpp"

using vnfkit::io::AfPacketConfig;
using vnfkit::io::AfPacketSocket;
using vnfkit::io::MacAddress;
using vnfkit::packet::PacketBatch;

namespace {

MacAddress mac_arg(const py::bytes& b, const char* what) {
  const std::string s = b;
  if (s.size() != 6) {
    throw py::value_error(std::string(what) + ": must be 6 bytes (a MAC address), got " + std::to_string(s.size()));
  }
  MacAddress m{};
  for (std::size_t i = 0; i < 6; ++i) m[i] = static_cast<std::uint8_t>(s[i]);
  return m;
}

const std::uint32_t* indices_arg(const py::array& indices, std::size_t& n) {
  vnfkit::bridge::require_1d<std::uint32_t>(indices, "indices");
  n = static_cast<std::size_t>(indices.size());
  return static_cast<const std::uint32_t*>(indices.data());
}

// A socket error as the matching OSError subclass; EPERM / EACCES as PermissionError saying what
// is missing (the usual case: not root, no CAP_NET_RAW).
void require_open(const AfPacketSocket& s) {
  if (s.closed()) throw py::value_error("AF_PACKET socket on '" + s.config().interface + "' is closed");
}

[[noreturn]] void raise_os_error(const std::system_error& e, const std::string& iface) {
  const int err = e.code().value();
  if (err == EPERM || err == EACCES) {
    py::set_error(PyExc_PermissionError, ("AF_PACKET socket on interface '" + iface +
                                          "' not permitted: needs root / CAP_NET_RAW (" + e.what() + ")").c_str());
    throw py::error_already_set();
  }
  py::object exc = py::reinterpret_borrow<py::object>(PyExc_OSError)(err, e.code().message(), iface);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

}  // namespace

void bind_live(py::module_& m) {
  py::class_<AfPacketSocket>(m, "AfPacketSocket",
                             "AF_PACKET socket on one interface: batched receive (recvmmsg) into PacketBatch "
                             "and batched send (sendmmsg) of chosen packets.")
      .def(py::init([](const std::string& interface, std::uint32_t batch, std::uint32_t snaplen, int fanout_group,
                       bool promiscuous, std::uint32_t buffer_bytes, std::uint32_t ring_blocks) {
             AfPacketConfig c;
             c.interface = interface;
             c.batch = batch;
             c.snaplen = snaplen;
             c.fanout_group = fanout_group;
             c.promiscuous = promiscuous;
             c.buffer_bytes = buffer_bytes;
             c.ring_blocks = ring_blocks;
             try {
               return std::make_unique<AfPacketSocket>(c);
             } catch (const std::system_error& e) {
               raise_os_error(e, interface);
             }
           }),
           py::arg("interface"), py::arg("batch") = 256, py::arg("snaplen") = 2048, py::arg("fanout_group") = -1,
           py::arg("promiscuous") = true, py::arg("buffer_bytes") = 4u << 20,
           py::arg("ring_blocks") = 0)
      .def("recv", [](AfPacketSocket& s, int timeout_ms) {
             auto in_use = vnfkit::bridge::UseGuard(&s, "AfPacketSocket", "use one socket per thread");
             require_open(s);
             if (timeout_ms < -1) throw py::value_error("timeout_ms: must be -1 (wait forever) or >= 0");
             PacketBatch b;
             try {
               py::gil_scoped_release nogil;
               s.recv(b, timeout_ms);
             } catch (const std::system_error& e) {
               raise_os_error(e, s.config().interface);
             }
             return b;
           }, py::arg("timeout_ms") = -1,
           "The frames that are ready (waiting up to timeout_ms for the first; -1 forever), as a batch "
           "(empty on timeout).")
      .def("send", [](AfPacketSocket& s, const PacketBatch& b, const py::object& indices) {
             auto in_use = vnfkit::bridge::UseGuard(&s, "AfPacketSocket", "use one socket per thread");
             auto batch_in_use = vnfkit::bridge::batch_read(&b);
             require_open(s);
             try {
               if (indices.is_none()) {
                 py::gil_scoped_release nogil;
                 return s.send_all(b);
               }
               std::size_t n = 0;
               const std::uint32_t* idx = indices_arg(py::cast<py::array>(indices), n);
               py::gil_scoped_release nogil;
               return s.send(b, idx, n);
             } catch (const std::system_error& e) {
               raise_os_error(e, s.config().interface);
             }
           }, py::arg("batch"), py::arg("indices") = py::none(),
           "Send the packets at `indices` (uint32, default all) of `batch`; returns how many the kernel took.")
      .def("close", &AfPacketSocket::close)
      .def("fileno", [](const AfPacketSocket& s) {
             require_open(s);
             return s.fd();
           })
      .def("stats", [](AfPacketSocket& s) {
             const auto st = s.stats();
             py::dict d;
             d["received"] = st.received;
             d["truncated"] = st.truncated;
             d["sent"] = st.sent;
             d["send_errors"] = st.send_errors;
             d["kernel_drops"] = st.kernel_drops;
             return d;
           }, "Counters: received, truncated, sent, send_errors, kernel_drops (cumulative).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](AfPacketSocket& s, const py::object&, const py::object&, const py::object&) { s.close(); })
      .def_property_readonly("interface", [](const AfPacketSocket& s) { return s.config().interface; })
      .def_property_readonly("batch", [](const AfPacketSocket& s) { return s.config().batch; })
      .def_property_readonly("snaplen", [](const AfPacketSocket& s) { return s.config().snaplen; })
      .def_property_readonly("fanout_group", [](const AfPacketSocket& s) { return s.config().fanout_group; })
      .def_property_readonly("ring_blocks", [](const AfPacketSocket& s) { return s.config().ring_blocks; })
      .def_property_readonly("ifindex", &AfPacketSocket::ifindex)
      .def_property_readonly("mtu", &AfPacketSocket::mtu)
      .def_property_readonly("closed", &AfPacketSocket::closed)
      .def_property_readonly("mac", [](const AfPacketSocket& s) {
        return py::bytes(reinterpret_cast<const char*>(s.mac().data()), s.mac().size());
      });

  m.def("set_ethernet_addresses", [](PacketBatch& b, const py::array& indices, const py::bytes& dst,
                                     const py::bytes& src) {
          const MacAddress d = mac_arg(dst, "dst");
          const MacAddress s = mac_arg(src, "src");
          auto in_use = vnfkit::bridge::batch_write(&b);
          std::size_t n = 0;
          const std::uint32_t* idx = indices_arg(indices, n);
          py::gil_scoped_release nogil;
          return vnfkit::io::set_ethernet_addresses(b, idx, n, d, s);
        }, py::arg("batch"), py::arg("indices").noconvert(), py::arg("dst"), py::arg("src"),
        "Write destination and source MAC into the Ethernet header of the packets at `indices`.");
}
