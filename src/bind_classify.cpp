// Bridge for vnfkit::classify: Toeplitz RSS hash, RETA, MultiQueueClassifier.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/classify/classifier.hpp"
#include "vnfkit/classify/reta.hpp"
#include "vnfkit/classify/toeplitz.hpp"
#include "vnfkit/packet/batch.hpp"
#include "vnfkit/packet/parse.hpp"

namespace cl = vnfkit::classify;
using vnfkit::bridge::require_1d;
using vnfkit::flow::FlowKey;
using vnfkit::packet::PacketBatch;

namespace {

std::vector<std::uint8_t> key_bytes(const py::object& key) {
  if (key.is_none()) return {cl::kMicrosoftRssKey.begin(), cl::kMicrosoftRssKey.end()};
  if (!py::isinstance<py::bytes>(key) && !py::isinstance<py::bytearray>(key)) {
    throw py::type_error("key: expected bytes or bytearray, got " +
                         py::str(py::type::of(key)).cast<std::string>());
  }
  const std::string s = py::isinstance<py::bytes>(key) ? key.cast<std::string>()
                                                       : std::string(PyByteArray_AsString(key.ptr()),
                                                                     static_cast<std::size_t>(PyByteArray_Size(key.ptr())));
  return {s.begin(), s.end()};
}

std::vector<std::uint8_t> data_bytes(const py::object& data, const char* what) {
  if (!py::isinstance<py::bytes>(data) && !py::isinstance<py::bytearray>(data)) {
    throw py::type_error(std::string(what) + ": expected bytes or bytearray, got " +
                         py::str(py::type::of(data)).cast<std::string>());
  }
  return key_bytes(data);
}

py::bytes to_pybytes(std::span<const std::uint8_t> s) {
  return py::bytes(reinterpret_cast<const char*>(s.data()), s.size());
}

// Validate the four IPv4 column arrays; returns n.
std::size_t check_v4(const py::array& src, const py::array& dst, const py::array& sport,
                     const py::array& dport) {
  require_1d<std::uint32_t>(src, "src");
  require_1d<std::uint32_t>(dst, "dst");
  require_1d<std::uint16_t>(sport, "sport");
  require_1d<std::uint16_t>(dport, "dport");
  const auto n = src.size();
  if (dst.size() != n || sport.size() != n || dport.size() != n) {
    throw py::value_error("src, dst, sport, dport: arrays must have the same length");
  }
  return static_cast<std::size_t>(n);
}

py::array_t<std::uint32_t> hash_v4_arrays(const cl::Toeplitz& t, const py::array& src, const py::array& dst,
                                          const py::array& sport, const py::array& dport, bool ports,
                                          bool symmetric) {
  const std::size_t n = check_v4(src, dst, sport, dport);
  py::array_t<std::uint32_t> out(static_cast<py::ssize_t>(n));
  const auto* s = static_cast<const std::uint32_t*>(src.data());
  const auto* d = static_cast<const std::uint32_t*>(dst.data());
  const auto* sp = static_cast<const std::uint16_t*>(sport.data());
  const auto* dp = static_cast<const std::uint16_t*>(dport.data());
  std::uint32_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    t.hash_v4_batch(s, d, sp, dp, n, ports, symmetric, o);
  }
  return out;
}

// An address as 4 or 16 network-order bytes: bytes of length 4/16, or anything
// ipaddress.ip_address accepts (str, int, IPv4Address, IPv6Address).
std::vector<std::uint8_t> address_bytes(const py::object& a, const char* what) {
  std::string packed;
  if (py::isinstance<py::bytes>(a)) {
    packed = a.cast<std::string>();
  } else {
    try {
      packed = py::module_::import("ipaddress").attr("ip_address")(a).attr("packed").cast<std::string>();
    } catch (py::error_already_set& e) {
      if (e.matches(PyExc_ValueError) || e.matches(PyExc_TypeError)) {
        throw py::value_error(std::string(what) + ": not an IP address: " + py::repr(a).cast<std::string>());
      }
      throw;
    }
  }
  if (packed.size() != 4 && packed.size() != 16) {
    throw py::value_error(std::string(what) + ": packed address must be 4 or 16 bytes, got " +
                          std::to_string(packed.size()));
  }
  return {packed.begin(), packed.end()};
}

}  // namespace

void bind_classify(py::module_& m) {
  m.attr("MICROSOFT_RSS_KEY") = to_pybytes(cl::kMicrosoftRssKey);

  m.def("toeplitz_hash", [](const py::object& data, const py::object& key) {
    const auto in = data_bytes(data, "data");
    const auto k = key_bytes(key);
    return cl::toeplitz_hash_bitserial(k, in);
  }, py::arg("data"), py::arg("key") = py::none(),
  "Toeplitz hash of `data` (network-order bytes) under `key` (default: the Microsoft RSS key).\n"
  "Any input length; the key must be at least len(data) + 4 bytes (ValueError otherwise).\n"
  "Bit-serial reference implementation: use Toeplitz for speed.");

  m.def("_toeplitz_hash_v4_bitserial",
        [](const py::array& src, const py::array& dst, const py::array& sport, const py::array& dport,
           const py::object& key, bool ports) {
    const std::size_t n = check_v4(src, dst, sport, dport);
    const auto k = key_bytes(key);
    if (k.size() < (ports ? 16u : 12u)) throw py::value_error("key: too short for the IPv4 input");
    py::array_t<std::uint32_t> out(static_cast<py::ssize_t>(n));
    const auto* s = static_cast<const std::uint32_t*>(src.data());
    const auto* d = static_cast<const std::uint32_t*>(dst.data());
    const auto* sp = static_cast<const std::uint16_t*>(sport.data());
    const auto* dp = static_cast<const std::uint16_t*>(dport.data());
    std::uint32_t* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      cl::toeplitz_hash_v4_bitserial(k, s, d, sp, dp, n, ports, o);
    }
    return out;
  }, py::arg("src").noconvert(), py::arg("dst").noconvert(), py::arg("sport").noconvert(),
     py::arg("dport").noconvert(), py::arg("key") = py::none(), py::arg("ports") = true,
  "Bit-serial IPv4 batch hash (like DPDK rte_softrss): a benchmark baseline only.");

  py::class_<cl::Toeplitz>(m, "Toeplitz",
      "Table-driven Toeplitz (RSS) hash under one key (40..64 bytes; default Microsoft's).\n"
      "Inputs are network-order ``src, dst[, sport, dport]``; IPv4 8/12 bytes, IPv6 32/36 bytes.\n"
      "symmetric=True orders the two endpoints canonically (smaller address first, ties by port)\n"
      "before hashing, so a->b and b->a hash equally under ANY key (unlike the NIC trick of a\n"
      "repeating 16-bit key); its values therefore differ from a NIC's symmetric mode.")
      .def(py::init([](const py::object& key, bool simd) {
        auto t = std::make_unique<cl::Toeplitz>(key_bytes(key));
        t->set_simd_enabled(simd);
        return t;
      }), py::arg("key") = py::none(), py::kw_only(), py::arg("simd") = true,
      "simd=False forces the portable table path for hash_v4 (for comparisons); with simd=True the\n"
      "AVX-512 + GFNI kernel is used when the CPU has it (same results).")
      .def_property_readonly("simd", &cl::Toeplitz::simd_enabled,
                             "Whether hash_v4 runs the AVX-512 + GFNI kernel.")
      .def_property_readonly_static("simd_supported", [](const py::object&) { return cl::Toeplitz::simd_supported(); },
                                    "Whether this CPU has avx512f/bw/vbmi + gfni.")
      .def_property_readonly("key", [](const cl::Toeplitz& t) { return to_pybytes(t.key()); })
      .def("hash", [](const cl::Toeplitz& t, const py::object& data) {
        return t.hash(data_bytes(data, "data"));
      }, py::arg("data"), "Hash of one input of 0..36 network-order bytes.")
      .def("hash_v4", &hash_v4_arrays, py::arg("src").noconvert(), py::arg("dst").noconvert(),
           py::arg("sport").noconvert(), py::arg("dport").noconvert(), py::kw_only(),
           py::arg("ports") = true, py::arg("symmetric") = false,
           "Hashes of IPv4 tuples given as HOST-order arrays (src, dst: uint32; sport, dport: uint16).\n"
           "Returns a uint32 array. ports=False hashes src|dst only.")
      .def("hash_keys", [](const cl::Toeplitz& t, const py::array& keys, bool ports, bool symmetric) {
        if (!keys.dtype().is(vnfkit::bridge::flow_key_dtype()) || keys.ndim() != 1 ||
            !(keys.flags() & py::array::c_style)) {
          throw py::type_error("keys: expected a C-contiguous 1-D array of vnfkit.FLOW_KEY_DTYPE");
        }
        const auto n = static_cast<std::size_t>(keys.size());
        py::array_t<std::uint32_t> out(static_cast<py::ssize_t>(n));
        const auto* k = static_cast<const FlowKey*>(keys.data());
        std::uint32_t* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          t.hash_keys({k, n}, ports, symmetric, o);
        }
        return out;
      }, py::arg("keys").noconvert(), py::kw_only(), py::arg("ports") = true, py::arg("symmetric") = false,
      "Hashes of an array of FlowKeys (FLOW_KEY_DTYPE); keys whose family is not 4/6 hash to 0.");

  py::class_<cl::Reta>(m, "Reta",
      "RSS indirection table: queue = table[hash & (size - 1)] (the LOW bits of the hash, as on\n"
      "Intel NICs and in DPDK). size: power of two 1..65536; num_queues: 1..1024; filled round\n"
      "robin (entry i -> i % num_queues). Entries can be changed at run time (set, update,\n"
      "item assignment); values must be < num_queues.")
      .def(py::init([](py::ssize_t size, py::ssize_t num_queues) {
        if (size < 0) throw py::value_error("reta_size: must be a power of two in 1..65536, got " + std::to_string(size));
        if (num_queues < 0) throw py::value_error("num_queues: must be in 1..1024, got " + std::to_string(num_queues));
        return std::make_unique<cl::Reta>(static_cast<std::size_t>(size), static_cast<std::size_t>(num_queues));
      }), py::arg("size") = 128, py::kw_only(), py::arg("num_queues") = 1)
      .def_property_readonly("size", &cl::Reta::size)
      .def_property_readonly("num_queues", &cl::Reta::num_queues)
      .def("__len__", &cl::Reta::size)
      .def("__getitem__", [](const cl::Reta& r, py::ssize_t i) {
        const auto n = static_cast<py::ssize_t>(r.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) throw py::index_error("reta index out of range");
        return r.get(static_cast<std::size_t>(i));
      }, py::arg("index"))
      .def("__setitem__", [](cl::Reta& r, py::ssize_t i, py::ssize_t q) {
        const auto n = static_cast<py::ssize_t>(r.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) throw py::index_error("reta index out of range");
        if (q < 0) throw py::value_error("reta entry: queue must be >= 0");
        r.set(static_cast<std::size_t>(i), static_cast<std::size_t>(q));
      }, py::arg("index"), py::arg("queue"))
      .def("set", [](cl::Reta& r, py::ssize_t i, py::ssize_t q) {
        if (i < 0) throw py::value_error("reta index: must be >= 0");
        if (q < 0) throw py::value_error("reta entry: queue must be >= 0");
        r.set(static_cast<std::size_t>(i), static_cast<std::size_t>(q));
      }, py::arg("index"), py::arg("queue"), "Set one entry (ValueError if out of range).")
      .def("update", [](cl::Reta& r, const py::object& table) {
        std::vector<std::uint16_t> t;
        if (py::isinstance<py::array>(table)) {
          const auto a = table.cast<py::array>();
          require_1d<std::uint16_t>(a, "table");
          const auto* p = static_cast<const std::uint16_t*>(a.data());
          t.assign(p, p + a.size());
        } else {
          for (py::handle h : table.cast<py::sequence>()) {
            if (!py::isinstance<py::int_>(h)) throw py::type_error("table: entries must be int");
            const auto v = h.cast<long long>();
            if (v < 0 || v > 0xFFFF) throw py::value_error("reta entry: queue " + std::to_string(v) + " out of range");
            t.push_back(static_cast<std::uint16_t>(v));
          }
        }
        r.assign(t);
      }, py::arg("table"),
      "Replace the whole table (a uint16 array or a sequence of ints, exactly `size` entries,\n"
      "each < num_queues); all-or-nothing.")
      .def("fill_round_robin", &cl::Reta::fill_round_robin)
      .def_property_readonly("table", [](const cl::Reta& r) {
        py::array_t<std::uint16_t> out(static_cast<py::ssize_t>(r.size()));
        r.copy_to(out.mutable_data());
        return out;
      }, "A copy of the table (uint16).")
      .def("lookup", [](const cl::Reta& r, std::uint32_t h) { return r.lookup(h); }, py::arg("hash"),
           "The queue of a hash: table[hash & (size - 1)].");

  py::class_<cl::MultiQueueClassifier>(m, "MultiQueueClassifier",
      "Software RSS: hash each packet's key (Toeplitz), pick its queue through the RETA, and split\n"
      "the batch into per-queue index lists.\n\n"
      "Ports are hashed iff use_ports and the protocol is TCP/UDP and the packet is not a fragment.\n"
      "Packets with drop != 0 or family == 0 get hash 0, flow_id 0, queue 0 (and are listed in queue\n"
      "0). flow_id is the symmetric Toeplitz hash (same key), so both directions share it; with\n"
      "symmetric=True, hash == flow_id.")
      .def(py::init([](py::ssize_t num_queues, const py::object& key, bool symmetric, py::ssize_t reta_size,
                       bool use_ports) {
        if (num_queues < 0) throw py::value_error("num_queues: must be in 1..1024, got " + std::to_string(num_queues));
        if (reta_size < 0) {
          throw py::value_error("reta_size: must be a power of two in 1..65536, got " + std::to_string(reta_size));
        }
        cl::ClassifierConfig cfg;
        cfg.num_queues = static_cast<std::size_t>(num_queues);
        if (!key.is_none()) {
          cfg.key = key_bytes(key);
          if (cfg.key.empty()) throw py::value_error("key: an RSS key must be 40..64 bytes, got 0");
        }
        cfg.symmetric = symmetric;
        cfg.reta_size = static_cast<std::size_t>(reta_size);
        cfg.use_ports = use_ports;
        return std::make_unique<cl::MultiQueueClassifier>(cfg);
      }), py::arg("num_queues"), py::kw_only(), py::arg("key") = py::none(), py::arg("symmetric") = false,
          py::arg("reta_size") = 128, py::arg("use_ports") = true)
      .def_property_readonly("num_queues", &cl::MultiQueueClassifier::num_queues)
      .def_property_readonly("symmetric", &cl::MultiQueueClassifier::symmetric)
      .def_property_readonly("use_ports", &cl::MultiQueueClassifier::use_ports)
      .def_property_readonly("key", [](const cl::MultiQueueClassifier& c) { return to_pybytes(c.toeplitz().key()); })
      .def_property_readonly("reta", [](cl::MultiQueueClassifier& c) -> cl::Reta& { return c.reta(); },
                             py::return_value_policy::reference_internal,
                             "The live indirection table (updates take effect on the next packet).")
      .def("classify", [](const cl::MultiQueueClassifier& c, PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_write(&b);
        const std::size_t n = b.size();
        const std::size_t nq = c.num_queues();
        py::array_t<std::uint32_t> order(static_cast<py::ssize_t>(n));
        std::vector<std::uint32_t> offs(nq + 1);
        std::uint32_t* o = order.mutable_data();
        {
          py::gil_scoped_release release;
          c.classify(b, o, offs.data());
        }
        py::list out(nq);
        for (std::size_t q = 0; q < nq; ++q) {
          out[q] = order[py::slice(offs[q], offs[q + 1], 1)];
        }
        return out;
      }, py::arg("batch"),
      "Write batch.hash, batch.flow_id and batch.queue, and return one uint32 array of packet indices\n"
      "per queue (arrival order; views into one buffer). The lists partition the batch.")
      .def("split", [](const cl::MultiQueueClassifier& c, const py::object& batch_obj) {
        if (!py::isinstance<PacketBatch>(batch_obj)) throw py::type_error("batch: must be a PacketBatch");
        auto& b = batch_obj.cast<PacketBatch&>();
        auto in_use = vnfkit::bridge::batch_write(&b);
        const std::size_t n = b.size();
        const std::size_t nq = c.num_queues();
        std::vector<std::uint32_t> order(n);
        std::vector<std::uint32_t> offs(nq + 1);
        std::vector<std::pair<std::size_t, PacketBatch>> parts;
        bool whole = false;
        std::size_t whole_q = 0;
        {
          py::gil_scoped_release release;
          c.classify(b, order.data(), offs.data());
          for (std::size_t q = 0; q < nq; ++q) {
            const std::size_t k = offs[q + 1] - offs[q];
            if (k == 0) continue;
            if (k == n) {  // every packet on one queue: the batch itself, no copy
              whole = true;
              whole_q = q;
              break;
            }
            parts.emplace_back(q, vnfkit::packet::select(b, order.data() + offs[q], k));
          }
        }
        py::list out;
        if (whole) {
          out.append(py::make_tuple(whole_q, batch_obj));
          return out;
        }
        for (auto& [q, sub] : parts) out.append(py::make_tuple(q, py::cast(std::move(sub))));
        return out;
      }, py::arg("batch"),
      "classify(), then each non-empty queue's packets as a batch of their own, in one call: [(queue,\n"
      "sub-batch)] in queue order (arrival order within each). A batch wholly on one queue comes back\n"
      "itself, uncopied. How a single process runs a multi-queue VNF (a backup replaying a master).")
      .def("ports_for_queue", [](const cl::MultiQueueClassifier& c, const py::object& remote_addr,
                                 const py::object& public_addr, int remote_port, std::size_t queue, int port_lo,
                                 int port_hi, int proto) {
        const auto ra = address_bytes(remote_addr, "remote_addr");
        const auto pa = address_bytes(public_addr, "public_addr");
        if (ra.size() != pa.size()) throw py::value_error("remote_addr, public_addr: address families differ");
        if (remote_port < 0 || remote_port > 65535) throw py::value_error("remote_port: must be 0..65535");
        if (port_lo < 0 || port_lo > 65535 || port_hi < 0 || port_hi > 65535) {
          throw py::value_error("port_lo, port_hi: must be 0..65535");
        }
        if (proto < 0 || proto > 255) throw py::value_error("proto: must be 0..255");
        FlowKey k;
        std::memcpy(k.src.data(), ra.data(), ra.size());
        std::memcpy(k.dst.data(), pa.data(), pa.size());
        k.sport = static_cast<std::uint16_t>(remote_port);
        k.proto = static_cast<std::uint8_t>(proto);
        k.family = ra.size() == 4 ? 4 : 6;
        if (port_lo > port_hi) {
          throw py::value_error("port range: port_lo (" + std::to_string(port_lo) + ") > port_hi (" +
                                std::to_string(port_hi) + ")");
        }
        std::vector<std::uint16_t> buf(static_cast<std::size_t>(port_hi - port_lo + 1));
        std::size_t found = 0;
        {
          py::gil_scoped_release release;
          found = c.ports_for_queue(k, static_cast<std::uint16_t>(port_lo), static_cast<std::uint16_t>(port_hi),
                                    queue, buf.data());
        }
        py::array_t<std::uint16_t> out(static_cast<py::ssize_t>(found));
        if (found) std::memcpy(out.mutable_data(), buf.data(), found * sizeof(std::uint16_t));
        return out;
      }, py::arg("remote_addr"), py::arg("public_addr"), py::arg("remote_port"), py::arg("queue"), py::kw_only(),
         py::arg("port_lo") = 50000, py::arg("port_hi") = 65535, py::arg("proto") = 6,
      "Predictable RSS for a NAT: the public ports p in [port_lo, port_hi] such that the REPLY packet\n"
      "(src=remote_addr:remote_port, dst=public_addr:p, proto) is classified to `queue`. Computed via\n"
      "Toeplitz linearity (h(p) = h(0) ^ contribution(p)). Addresses: str, int, ipaddress objects,\n"
      "or packed bytes (4/16). Returns a sorted uint16 array.");
}
