#include <cstring>
#include <optional>
#include <system_error>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/packet/batch.hpp"
#include "vnfkit/packet/build.hpp"
#include "vnfkit/packet/checksum.hpp"
#include "vnfkit/packet/parse.hpp"
#include "vnfkit/packet/pcap.hpp"
#include "vnfkit/packet/rewrite.hpp"

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
using vnfkit::packet::Buffer;

// The base object of a numpy view of `buf`: a capsule sharing its current memory block, so the view
// stays valid when the batch later reallocates or swaps that column (see packet/buffer.hpp).
template <typename T>
py::object view_base(const Buffer<T>& buf, py::handle self) {
  auto blk = buf.owner();
  if (!blk) return py::reinterpret_borrow<py::object>(self);
  return py::capsule(new std::shared_ptr<void>(std::move(blk)),
                     [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
}

template <typename T>
py::array_t<T> column_view(Buffer<T>& buf, py::handle self) {
  return view1d(buf.data(), buf.size(), view_base(buf, self));
}

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

PacketBatch batch_from_arrays(const py::array& data, const py::array& offsets, const py::object& ts_ns) {
  vnfkit::bridge::require_1d<std::uint8_t>(data, "data");
  vnfkit::bridge::require_1d<std::uint32_t>(offsets, "offsets");
  const auto nd = static_cast<std::size_t>(data.size());
  const auto no = static_cast<std::size_t>(offsets.size());
  if (no == 0) throw py::value_error("offsets: needs n + 1 >= 1 entries");
  const std::size_t n = no - 1;
  std::optional<py::array> ts;
  if (!ts_ns.is_none()) {
    if (!py::isinstance<py::array>(ts_ns)) throw py::type_error("ts_ns: expected a numpy array of dtype uint64");
    ts = ts_ns.cast<py::array>();
    vnfkit::bridge::require_1d<std::uint64_t>(*ts, "ts_ns");
    if (static_cast<std::size_t>(ts->size()) != n) throw py::value_error("ts_ns: length must equal len(offsets) - 1");
  }
  const auto* o = static_cast<const std::uint32_t*>(offsets.data());
  if (o[0] != 0) throw py::value_error("offsets: offsets[0] must be 0");
  for (std::size_t i = 0; i < n; ++i) {
    if (o[i + 1] < o[i]) throw py::value_error("offsets: must be non-decreasing (at index " + std::to_string(i + 1) + ")");
  }
  if (o[n] != nd) throw py::value_error("offsets: offsets[-1] must equal len(data)");
  PacketBatch b;
  b.data.resize(nd);
  if (nd) std::memcpy(b.data.data(), data.data(), nd);
  b.offsets.assign(o, o + no);
  b.resize_columns(n);
  if (ts) std::memcpy(b.ts_ns.data(), ts->data(), n * sizeof(std::uint64_t));
  for (std::size_t i = 0; i < n; ++i) b.packet_id[i] = i;
  return b;
}

template <typename T>
const T* arr_ptr(const py::array& a, const char* what, std::size_t n) {
  vnfkit::bridge::require_1d<T>(a, what);
  if (static_cast<std::size_t>(a.size()) != n) {
    throw py::value_error(std::string(what) + ": length must equal the number of packets");
  }
  return static_cast<const T*>(a.data());
}

std::size_t rewrite(PacketBatch& b, vnfkit::packet::Side side, const py::array& indices, const py::array& addr,
                    const py::array& port) {
  vnfkit::bridge::require_1d<std::uint32_t>(indices, "indices");
  auto in_use = vnfkit::bridge::batch_write(&b);
  const auto n = static_cast<std::size_t>(indices.size());
  const auto* ip = static_cast<const std::uint32_t*>(indices.data());
  const auto* ap = arr_ptr<std::uint32_t>(addr, "addr", n);
  const auto* pp = arr_ptr<std::uint16_t>(port, "port", n);
  py::gil_scoped_release nogil;
  return vnfkit::packet::rewrite_v4(b, side, ip, ap, pp, n);
}

void check_key_array(const py::array& keys) {
  if (!keys.dtype().equal(vnfkit::bridge::flow_key_dtype())) {
    throw py::type_error("keys: expected a numpy array of vnfkit.FLOW_KEY_DTYPE, got " +
                         py::str(keys.dtype()).cast<std::string>());
  }
  if (keys.ndim() != 1) throw py::type_error("keys: expected a 1-D array");
  if (!(keys.flags() & py::array::c_style)) throw py::type_error("keys: array must be C-contiguous (got a strided view)");
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
    if (r < 0 || r >= static_cast<int>(DropReason::kCount_)) {
      throw py::value_error("code: unknown drop reason code " + std::to_string(r));
    }
    return std::string(vnfkit::packet::drop_reason_name(static_cast<DropReason>(r)));
  }, py::arg("code"));
  m.def("flow_key_dtype", &vnfkit::bridge::flow_key_dtype);
  m.def("encode_input_record", [](PacketBatch& b, std::optional<std::uint64_t> first_id) {
    auto in_use = vnfkit::bridge::batch_write(&b);
    const std::size_t size = vnfkit::packet::input_record_bytes(b);  // validates first: nothing written on error
    if (first_id) vnfkit::packet::assign_ids(b, *first_id);
    PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
    if (raw == nullptr) throw py::error_already_set();
    py::bytes out = py::reinterpret_steal<py::bytes>(raw);
    vnfkit::packet::write_input_record(b, reinterpret_cast<std::uint8_t*>(PyBytes_AS_STRING(raw)));
    return out;
  }, py::arg("batch"), py::arg("first_id") = py::none(),
  "The input log's record of `batch` (see recovery.input_log.encode_batch), in one copy; with\n"
  "`first_id`, packet i first gets packet_id first_id + i (in the batch and in the record).");
  m.def("decode_input_record", [](const py::bytes& rec) {
    char* ptr = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(rec.ptr(), &ptr, &len) != 0) throw py::error_already_set();
    return vnfkit::packet::read_input_record({reinterpret_cast<const std::uint8_t*>(ptr), static_cast<std::size_t>(len)});
  }, py::arg("record"),
  "The batch an input record holds (unparsed; timestamps and ids restored): encode_input_record's inverse.\n"
  "ValueError naming what is wrong for a damaged record.");

  py::class_<PacketBatch>(m, "PacketBatch",
                          "Native packet batch: one byte buffer, offsets and per-packet columns.\n"
                          "Column accessors return numpy views over engine memory (no copies).")
      .def(py::init(&batch_from_list), py::arg("packets"), py::arg("ts_ns") = py::none())
      .def_static("from_arrays", &batch_from_arrays, py::arg("data").noconvert(), py::arg("offsets").noconvert(),
                  py::arg("ts_ns") = py::none(),
                  "Copy packets from numpy arrays: data (uint8), offsets (uint32, n+1 entries, offsets[0] == 0,\n"
                  "non-decreasing, offsets[-1] == len(data)) and optional ts_ns (uint64, n entries).")
      .def_static("from_pcap", [](const std::string& path) {
        py::gil_scoped_release nogil;
        return vnfkit::packet::read_pcap(path);
      }, py::arg("path"), "Read a whole pcap / pcapng file (use vnfkit.packets.iter_pcap for big files).")
      .def("to_list", [](const PacketBatch& b) {
        py::list out(b.size());
        for (std::size_t i = 0; i < b.size(); ++i) {
          auto p = b.packet(i);
          out[i] = py::bytes(reinterpret_cast<const char*>(p.data()), p.size());
        }
        return out;
      }, "The packets as a list of bytes.")
      .def("to_pcap", [](const PacketBatch& b, const std::string& path, bool nanosecond) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        py::gil_scoped_release nogil;
        vnfkit::packet::write_pcap(path, b, nanosecond);
      }, py::arg("path"), py::arg("nanosecond") = false, "Write a classic pcap file (of the batch's linktype).")
      .def_property("linktype", [](const PacketBatch& b) { return b.linktype; },
                    [](PacketBatch& b, std::int64_t v) {
        auto in_use = vnfkit::bridge::batch_write(&b);
        if (v < 0 || v > 0xFFFF) throw py::value_error("linktype: must be a pcap LINKTYPE_ value in 0..65535, got " + std::to_string(v));
        b.linktype = static_cast<std::uint32_t>(v);
      }, "Link-layer framing of every packet (a pcap ``LINKTYPE_*`` value: 1 Ethernet, 101 raw IP, 113 / 276 Linux cooked, ...).")
      .def("select", [](const PacketBatch& b, const py::array& indices) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        vnfkit::bridge::require_1d<std::uint32_t>(indices, "indices");
        const auto* ip = static_cast<const std::uint32_t*>(indices.data());
        const auto n = static_cast<std::size_t>(indices.size());
        py::gil_scoped_release nogil;
        return vnfkit::packet::select(b, ip, n);
      }, py::arg("indices").noconvert(), "A new batch with the packets at `indices` (uint32) and all their columns.")
      .def("drop_counts", [](const PacketBatch& b) {
        std::size_t counts[static_cast<int>(DropReason::kCount_)];
        vnfkit::packet::count_drops(b, counts);
        py::dict d;
        for (int r = 1; r < static_cast<int>(DropReason::kCount_); ++r) {
          if (counts[r]) d[py::str(std::string(vnfkit::packet::drop_reason_name(static_cast<DropReason>(r))))] = counts[r];
        }
        return d;
      }, "Number of dropped packets per drop reason name (non-zero only).")
      .def("parse", [](PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_write(&b);
        if (!vnfkit::packet::parse_supports(b.linktype)) {
          throw py::value_error("linktype: the parser does not handle link type " + std::to_string(b.linktype) +
                                "; it handles " + vnfkit::packet::kSupportedLinktypes);
        }
        py::gil_scoped_release nogil;
        return vnfkit::packet::parse_batch(b);
      }, "Parse Ethernet/VLAN (or raw IP, Linux cooked: see linktype)/IPv4/IPv6/TCP/UDP/ICMP headers into the\n"
         "key and offset columns. Raises ValueError for a link type the parser does not handle.\n"
         "Returns the number of malformed packets (they get a drop reason and port 0).")
      .def("verify_checksums", [](const PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        py::array_t<bool> out(static_cast<py::ssize_t>(b.size()));
        auto* p = reinterpret_cast<std::uint8_t*>(out.mutable_data());
        {
          py::gil_scoped_release nogil;
          vnfkit::packet::verify_checksums(b, p);
        }
        return out;
      }, "Per packet of a parsed batch: True if its IPv4 header and L4 checksums are right.")
      .def("fix_checksums", [](PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_write(&b);
        py::gil_scoped_release nogil;
        vnfkit::packet::fix_checksums(b);
      }, "Recompute every checksum of a parsed batch in full.")
      .def("rewrite_source", [](PacketBatch& b, const py::array& indices, const py::array& addr, const py::array& port) {
        return rewrite(b, vnfkit::packet::Side::kSource, indices, addr, port);
      }, py::arg("indices").noconvert(), py::arg("addr").noconvert(), py::arg("port").noconvert(),
         "Set the IPv4 source address (uint32, host order) and source port / ICMP echo id (uint16) of the\n"
         "packets at `indices` (uint32) with incremental checksum updates. Returns the number rewritten.")
      .def("rewrite_destination", [](PacketBatch& b, const py::array& indices, const py::array& addr, const py::array& port) {
        return rewrite(b, vnfkit::packet::Side::kDestination, indices, addr, port);
      }, py::arg("indices").noconvert(), py::arg("addr").noconvert(), py::arg("port").noconvert(),
         "Like rewrite_source, for the destination address and port.")
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
        return column_view(b.data, self);
      })
      .def_property_readonly("offsets", [](py::object self) {
        // Read-only: every engine loop trusts offsets (validated once when the batch is built), so a
        // write through this view could send them out of bounds.
        auto& b = self.cast<PacketBatch&>();
        auto v = column_view(b.offsets, self);
        v.attr("flags").attr("writeable") = false;
        return v;
      }, "Packet boundaries (uint32, len + 1 entries): a READ-ONLY view.")
#define VNFKIT_COLUMN(name)                                          \
  .def_property_readonly(#name, [](py::object self) {                \
    auto& b = self.cast<PacketBatch&>();                             \
    return column_view(b.name, self);                                \
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
                         {static_cast<py::ssize_t>(sizeof(FlowKey))}, b.key.data(), view_base(b.key, self));
      });

  static py::exception<vnfkit::packet::PcapError> pcap_error(m, "PcapError", PyExc_ValueError);
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const vnfkit::packet::PcapError& e) {
      py::set_error(pcap_error, e.what());
    } catch (const std::system_error& e) {
      if (e.code().category() != std::generic_category()) throw;
      std::string what = e.what();
      const std::string msg = e.code().message();
      std::string filename = what;
      if (what.size() > msg.size() + 2 && what.compare(what.size() - msg.size(), msg.size(), msg) == 0) {
        filename = what.substr(0, what.size() - msg.size() - 2);
      }
      py::object err = py::reinterpret_borrow<py::object>(PyExc_OSError)(e.code().value(), msg, filename);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    }
  });

  py::class_<vnfkit::packet::PcapReader>(m, "PcapReader",
                                         "Streaming pcap / pcapng reader yielding PacketBatch chunks.")
      .def(py::init([](const std::string& path) {
        py::gil_scoped_release nogil;  // opening a FIFO waits for its writer, which may be a Python thread
        return std::make_unique<vnfkit::packet::PcapReader>(path);
      }), py::arg("path"))
      .def("read", [](vnfkit::packet::PcapReader& r, std::size_t max_packets) -> py::object {
        auto reader_in_use = vnfkit::bridge::UseGuard(&r, "PcapReader", "use one reader per thread");
        if (max_packets == 0) throw py::value_error("max_packets: must be >= 1");
        PacketBatch b;
        std::size_t n = 0;
        {
          py::gil_scoped_release nogil;
          n = r.read(b, max_packets);
        }
        if (n == 0) return py::none();
        return py::cast(std::move(b));
      }, py::arg("max_packets") = 65536, "The next chunk of up to max_packets packets, or None at the end.")
      .def_property_readonly("pcapng", &vnfkit::packet::PcapReader::pcapng)
      .def_property_readonly("linktype", &vnfkit::packet::PcapReader::linktype)
      .def_property_readonly("packets_read", &vnfkit::packet::PcapReader::packets_read)
      .def_property_readonly("snapped", &vnfkit::packet::PcapReader::snapped)
      .def_property_readonly("file_size", &vnfkit::packet::PcapReader::file_size,
                             "Size of the file in bytes (0 if it is not a regular file).")
      .def_property_readonly("position", &vnfkit::packet::PcapReader::position, "Bytes of the file consumed so far.")
      .def_property_readonly("truncated_offset", [](const vnfkit::packet::PcapReader& r) -> py::object {
        if (r.truncated_offset() == vnfkit::packet::kNotTruncated) return py::none();
        return py::int_(r.truncated_offset());
      }, "Byte offset of a final record cut off by the end of the file (read up to it), or None.")
      .def_property_readonly("truncated_bytes", &vnfkit::packet::PcapReader::truncated_bytes,
                             "Bytes of that cut-off record left unread (0 if none).");

  py::class_<vnfkit::packet::PcapWriter>(m, "PcapWriter", "Classic pcap writer of one link type, micro- or nanosecond.")
      .def(py::init([](const std::string& path, bool nanosecond, std::int64_t linktype) {
        if (linktype < 0 || linktype > 0xFFFF) {
          throw py::value_error("linktype: must be a pcap LINKTYPE_ value in 0..65535, got " + std::to_string(linktype));
        }
        py::gil_scoped_release nogil;  // opening a FIFO waits for its reader
        return std::make_unique<vnfkit::packet::PcapWriter>(path, nanosecond, static_cast<std::uint32_t>(linktype));
      }), py::arg("path"), py::arg("nanosecond") = false, py::arg("linktype") = 1)
      .def("write", [](vnfkit::packet::PcapWriter& w, const PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        auto writer_in_use = vnfkit::bridge::UseGuard(&w, "PcapWriter", "use one writer per thread");
        py::gil_scoped_release nogil;
        w.write(b);
      }, py::arg("batch"))
      .def("close", [](vnfkit::packet::PcapWriter& w) {
        auto writer_in_use = vnfkit::bridge::UseGuard(&w, "PcapWriter", "use one writer per thread");
        w.close();
      })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](vnfkit::packet::PcapWriter& w, const py::object&, const py::object&, const py::object&) {
        auto writer_in_use = vnfkit::bridge::UseGuard(&w, "PcapWriter", "use one writer per thread");
        w.close();
      })
      .def_property_readonly("packets_written", &vnfkit::packet::PcapWriter::packets_written)
      .def_property_readonly("linktype", &vnfkit::packet::PcapWriter::linktype);

  m.def("build_packets", [](const py::array& keys, const py::array& sizes, const py::array& ts_ns,
                            const py::array& tcp_flags, const py::array& seq) {
    check_key_array(keys);
    const auto n = static_cast<std::size_t>(keys.size());
    const auto* sz = arr_ptr<std::uint16_t>(sizes, "sizes", n);
    const auto* ts = arr_ptr<std::uint64_t>(ts_ns, "ts_ns", n);
    const auto* tf = arr_ptr<std::uint8_t>(tcp_flags, "tcp_flags", n);
    const auto* sq = arr_ptr<std::uint32_t>(seq, "seq", n);
    const auto* k = static_cast<const FlowKey*>(keys.data());
    py::gil_scoped_release nogil;
    return vnfkit::packet::build_packets(k, sz, ts, tf, sq, n);
  }, py::arg("keys").noconvert(), py::arg("sizes").noconvert(), py::arg("ts_ns").noconvert(),
     py::arg("tcp_flags").noconvert(), py::arg("seq").noconvert(),
     "Build Ethernet frames with valid checksums from flow keys (see vnfkit.traffic).");
}
