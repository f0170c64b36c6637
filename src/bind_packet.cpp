#include <cstring>

#include "pybind.hpp"
#include "vnfkit/packet/batch.hpp"

using vnfkit::flow::FlowKey;
using vnfkit::packet::DropReason;
using vnfkit::packet::PacketBatch;

namespace vnfkit::bridge {

py::dtype flow_key_dtype() {
  // Leaked on purpose: a static py::object would be destroyed after the interpreter finalizes.
  static py::object* cached = new py::object([] {
    py::list fields;
    fields.append(py::make_tuple("src", "u1", py::make_tuple(16)));
    fields.append(py::make_tuple("dst", "u1", py::make_tuple(16)));
    fields.append(py::make_tuple("sport", "<u2"));
    fields.append(py::make_tuple("dport", "<u2"));
    fields.append(py::make_tuple("proto", "u1"));
    fields.append(py::make_tuple("family", "u1"));
    fields.append(py::make_tuple("pad", "<u2"));
    py::object dt = py::module_::import("numpy").attr("dtype")(fields);
    if (dt.attr("itemsize").cast<std::size_t>() != sizeof(FlowKey)) {
      throw std::runtime_error("FlowKey dtype size mismatch");
    }
    return dt;
  }());
  return py::reinterpret_borrow<py::dtype>(*cached);
}

}  // namespace vnfkit::bridge

namespace {

using vnfkit::bridge::view1d;

PacketBatch batch_from_list(const py::sequence& packets, py::object ts_ns) {
  PacketBatch b;
  b.clear();
  std::size_t total = 0;
  std::vector<std::string_view> views;
  views.reserve(py::len(packets));
  for (py::handle p : packets) {
    if (!py::isinstance<py::bytes>(p) && !py::isinstance<py::bytearray>(p)) {
      throw py::type_error("PacketBatch: every packet must be bytes or bytearray, got " +
                           py::str(py::type::of(p)).cast<std::string>());
    }
    char* buf = nullptr;
    py::ssize_t len = 0;
    if (py::isinstance<py::bytes>(p)) {
      PyBytes_AsStringAndSize(p.ptr(), &buf, &len);
    } else {
      buf = PyByteArray_AsString(p.ptr());
      len = PyByteArray_Size(p.ptr());
    }
    views.emplace_back(buf, static_cast<std::size_t>(len));
    total += static_cast<std::size_t>(len);
  }
  if (total > 0xFFFFFFFFull) throw py::value_error("PacketBatch: more than 4 GiB of packet data");
  b.data.reserve(total);
  for (auto v : views) {
    b.data.insert(b.data.end(), v.begin(), v.end());
    b.offsets.push_back(static_cast<std::uint32_t>(b.data.size()));
  }
  b.resize_columns(views.size());
  if (!ts_ns.is_none()) {
    auto ts = ts_ns.cast<py::array>();
    vnfkit::bridge::require_1d<std::uint64_t>(ts, "ts_ns");
    if (static_cast<std::size_t>(ts.size()) != views.size()) {
      throw py::value_error("ts_ns: length must equal the number of packets");
    }
    std::memcpy(b.ts_ns.data(), ts.data(), views.size() * sizeof(std::uint64_t));
  }
  for (std::size_t i = 0; i < b.size(); ++i) b.packet_id[i] = i;
  return b;
}

}  // namespace

void bind_packet(py::module_& m) {
  py::native_enum<DropReason>(m, "DropReason", "enum.IntEnum", "Why a packet was dropped (0 = not dropped).")
      .value("NONE", DropReason::kNone)
      .value("TRUNCATED", DropReason::kTruncated)
      .value("BAD_ETHERTYPE", DropReason::kBadEthertype)
      .value("BAD_IP_VERSION", DropReason::kBadIpVersion)
      .value("BAD_IHL", DropReason::kBadIhl)
      .value("BAD_IP_LENGTH", DropReason::kBadIpLength)
      .value("BAD_L4_HEADER", DropReason::kBadL4Header)
      .value("BAD_EXT_HEADER", DropReason::kBadExtHeader)
      .value("POLICY", DropReason::kPolicy)
      .value("NO_MAPPING", DropReason::kNoMapping)
      .value("POOL_EXHAUSTED", DropReason::kPoolExhausted)
      .value("TABLE_FULL", DropReason::kTableFull)
      .value("TTL_EXPIRED", DropReason::kTtlExpired)
      .value("OTHER", DropReason::kOther)
      .finalize();

  m.def("drop_reason_name", [](int r) {
    if (r < 0 || r >= static_cast<int>(DropReason::kCount_)) throw py::value_error("unknown drop reason code");
    return std::string(vnfkit::packet::drop_reason_name(static_cast<DropReason>(r)));
  }, py::arg("code"));
  m.def("flow_key_dtype", &vnfkit::bridge::flow_key_dtype);

  py::class_<PacketBatch>(m, "PacketBatch",
                          "Native packet batch: one byte buffer, offsets and per-packet columns.\n"
                          "Column accessors return numpy views over engine memory (no copies).")
      .def(py::init(&batch_from_list), py::arg("packets"), py::arg("ts_ns") = py::none())
      .def("__len__", &PacketBatch::size)
      .def("packet", [](const PacketBatch& b, py::ssize_t i) {
        const auto n = static_cast<py::ssize_t>(b.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) throw py::index_error("packet index out of range");
        auto p = b.packet(static_cast<std::size_t>(i));
        return py::bytes(reinterpret_cast<const char*>(p.data()), p.size());
      }, py::arg("index"))
      .def("validate", &PacketBatch::validate)
      .def("_engine_ptr", [](PacketBatch& b) { return reinterpret_cast<std::uintptr_t>(&b); },
           "Address of the engine PacketBatch (for Cython stages, see docs/cython.md); valid only while\n"
           "this Python object lives, and only within the same process.")
      .def_property_readonly("data", [](py::object self) {
        auto& b = self.cast<PacketBatch&>();
        return view1d(b.data.data(), b.data.size(), self);
      })
      .def_property_readonly("offsets", [](py::object self) {
        auto& b = self.cast<PacketBatch&>();
        return view1d(b.offsets.data(), b.offsets.size(), self);
      })
#define VNFKIT_COLUMN(name)                                          \
  .def_property_readonly(#name, [](py::object self) {                \
    auto& b = self.cast<PacketBatch&>();                             \
    return view1d(b.name.data(), b.name.size(), self);               \
  })
      VNFKIT_COLUMN(ts_ns)
      VNFKIT_COLUMN(packet_id)
      VNFKIT_COLUMN(hash)
      VNFKIT_COLUMN(flow_id)
      VNFKIT_COLUMN(queue)
      VNFKIT_COLUMN(port)
      VNFKIT_COLUMN(drop)
      VNFKIT_COLUMN(flags)
      VNFKIT_COLUMN(tcp_flags)
      VNFKIT_COLUMN(l3_offset)
      VNFKIT_COLUMN(l4_offset)
      VNFKIT_COLUMN(l4_len)
#undef VNFKIT_COLUMN
      .def_property_readonly("key", [](py::object self) {
        auto& b = self.cast<PacketBatch&>();
        return py::array(vnfkit::bridge::flow_key_dtype(), {static_cast<py::ssize_t>(b.key.size())},
                         {static_cast<py::ssize_t>(sizeof(FlowKey))}, b.key.data(), self);
      });
}
