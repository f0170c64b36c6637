// Bridge for the generic gateway primitives (vnfkit::nfs) used by the Python middleboxes.
#include "pybind.hpp"
#include "use_guard.hpp"

#include "vnfkit/nfs/gateway.hpp"

using vnfkit::bridge::require_1d;
using vnfkit::packet::PacketBatch;

namespace {
// records: a writable C-contiguous 1-D array of plain bytes (the engine writes raw uint64 fields into
// it, so an object dtype, whose items are PyObject pointers, must never reach it).
void check_records(const py::array& records) {
  if (records.ndim() != 1 || !(records.flags() & py::array::c_style) || !records.writeable()) {
    throw py::type_error("records: expected a writable C-contiguous 1-D array");
  }
  if (records.dtype().attr("hasobject").cast<bool>()) {
    throw py::type_error("records: dtype must not hold Python objects");
  }
}
}  // namespace

void bind_nfs(py::module_& m) {
  m.def("split_gateway", [](PacketBatch& b, std::uint32_t inside_net, std::uint32_t inside_mask, std::uint32_t addr,
                            std::uint16_t out_port, std::uint16_t in_port, bool ports_only) {
    auto in_use = vnfkit::bridge::batch_write(&b);
    const auto n = static_cast<py::ssize_t>(b.size());
    py::array_t<std::uint32_t> src(n), dst(n), out(n), in(n), other(n), nv4(n), out_np(n), in_np(n);
    const vnfkit::nfs::SplitOutput o{src.mutable_data(), dst.mutable_data(), out.mutable_data(), in.mutable_data(),
                                     other.mutable_data(), nv4.mutable_data(), out_np.mutable_data(),
                                     in_np.mutable_data()};
    vnfkit::nfs::SplitCounts c;
    {
      py::gil_scoped_release nogil;
      c = vnfkit::nfs::split_gateway(b, inside_net, inside_mask, addr, out_port, in_port, ports_only, o);
    }
    auto cut = [](py::array_t<std::uint32_t>& a, std::size_t k) {
      return a[py::slice(0, static_cast<py::ssize_t>(k), 1)];
    };
    return py::make_tuple(src, dst, cut(out, c.outbound), cut(in, c.inbound), cut(other, c.other),
                          cut(nv4, c.not_v4), cut(out_np, c.outbound_np), cut(in_np, c.inbound_np));
  }, py::arg("batch"), py::arg("inside_net"), py::arg("inside_mask"), py::arg("addr"), py::arg("out_port") = 0,
     py::arg("in_port") = 0, py::arg("ports_only") = false,
     "One pass over a parsed batch: returns (src, dst, outbound, inbound, other, not_v4, outbound_np,\n"
     "inbound_np). src/dst are host-order IPv4 addresses (uint32, 0 if not IPv4 or dropped); the uint32 index\n"
     "arrays hold the non-dropped packets going from the inside prefix to outside (not to addr), from outside\n"
     "to addr, other IPv4 (including non-first fragments), non-IPv4, and with ports_only=True the outbound /\n"
     "inbound packets that are not TCP/UDP. Sets batch.port: out_port / in_port for the outbound / inbound\n"
     "lists, 0 for every other packet.");

  m.def("touch_deadlines", [](py::array& records, std::size_t deadline_offset, std::size_t timeout_offset,
                              const py::array& slots, const py::array& ts, const py::object& flags,
                              std::uint8_t close_mask, std::uint64_t close_timeout) {
    check_records(records);
    require_1d<std::uint32_t>(slots, "slots");
    require_1d<std::uint64_t>(ts, "ts");
    const auto n = static_cast<std::size_t>(slots.shape(0));
    if (static_cast<std::size_t>(ts.shape(0)) != n) throw py::value_error("ts: length differs from slots");
    const std::uint8_t* f = nullptr;
    py::array fl;
    if (!flags.is_none()) {
      fl = flags.cast<py::array>();
      require_1d<std::uint8_t>(fl, "flags");
      if (static_cast<std::size_t>(fl.shape(0)) != n) throw py::value_error("flags: length differs from slots");
      f = static_cast<const std::uint8_t*>(fl.data());
    }
    py::array_t<std::uint64_t> old(static_cast<py::ssize_t>(n));
    auto* base = static_cast<std::uint8_t*>(records.mutable_data());
    const auto count = static_cast<std::size_t>(records.shape(0));
    const auto size = static_cast<std::size_t>(records.itemsize());
    const auto* s = static_cast<const std::uint32_t*>(slots.data());
    const auto* t = static_cast<const std::uint64_t*>(ts.data());
    auto* o = old.mutable_data();
    {
      py::gil_scoped_release nogil;
      vnfkit::nfs::touch_deadlines(base, count, size, deadline_offset, timeout_offset, s, t, f, n, close_mask,
                                   close_timeout, o);
    }
    return old;
  }, py::arg("records"), py::arg("deadline_offset"), py::arg("timeout_offset"), py::arg("slots").noconvert(),
     py::arg("ts").noconvert(), py::arg("flags").noconvert() = py::none(), py::arg("close_mask") = 0,
     py::arg("close_timeout") = 0,
     "Idle timer over caller-owned records (a structured array): for each j in order, record slots[j] gets\n"
     "timeout = min(timeout, close_timeout) if flags[j] & close_mask, and deadline = ts[j] + timeout;\n"
     "returns each touch's previous deadline (uint64).");

  m.def("touch_deadlines_at", [](py::array& records, std::size_t deadline_offset, std::size_t timeout_offset,
                                 const py::array& slots, PacketBatch& b, const py::array& indices,
                                 std::uint8_t close_mask, std::uint64_t close_timeout) {
    auto in_use = vnfkit::bridge::batch_read(&b);
    check_records(records);
    require_1d<std::uint32_t>(slots, "slots");
    require_1d<std::uint32_t>(indices, "indices");
    const auto n = static_cast<std::size_t>(slots.shape(0));
    if (static_cast<std::size_t>(indices.shape(0)) != n) throw py::value_error("indices: length differs from slots");
    py::array_t<bool> expired(static_cast<py::ssize_t>(n));
    auto* base = static_cast<std::uint8_t*>(records.mutable_data());
    const auto count = static_cast<std::size_t>(records.shape(0));
    const auto size = static_cast<std::size_t>(records.itemsize());
    const auto* s = static_cast<const std::uint32_t*>(slots.data());
    const auto* ix = static_cast<const std::uint32_t*>(indices.data());
    auto* e = reinterpret_cast<std::uint8_t*>(expired.mutable_data());
    std::size_t k;
    {
      py::gil_scoped_release nogil;
      k = vnfkit::nfs::touch_deadlines_at(base, count, size, deadline_offset, timeout_offset, s, b, ix, n, close_mask,
                                          close_timeout, e);
    }
    return py::make_tuple(expired, k);
  }, py::arg("records"), py::arg("deadline_offset"), py::arg("timeout_offset"), py::arg("slots").noconvert(),
     py::arg("batch"), py::arg("indices").noconvert(), py::arg("close_mask") = 0, py::arg("close_timeout") = 0,
     "touch_deadlines driven by a batch: touch j uses packet indices[j]'s ts_ns and tcp_flags. Returns\n"
     "(expired, count): expired[j] is True where the record's deadline before the touch was non-zero and\n"
     "<= the packet's time.");

  m.def("nat_fast_path", [](PacketBatch& b, vnfkit::flow::FlowTable& out, vnfkit::flow::FlowTable& in,
                            const py::array& oidx, const py::array& iidx, std::uint32_t public_addr,
                            std::uint64_t close_timeout, const py::object& fwd_rev, const py::object& fwd_in,
                            py::array& mark, py::array& out_idx, py::array& out_slot, py::array& out_new,
                            py::array& in_idx) {
    auto batch_use = vnfkit::bridge::batch_write(&b);
    auto out_use = vnfkit::bridge::flow_table_use(&out);
    auto in_use = vnfkit::bridge::flow_table_use(&in);
    require_1d<std::uint32_t>(oidx, "oidx");
    require_1d<std::uint32_t>(iidx, "iidx");
    const auto n_out = static_cast<std::size_t>(oidx.shape(0));
    const auto n_in = static_cast<std::size_t>(iidx.shape(0));
    auto writable = [](py::array& a, const char* what, std::size_t need) {
      if (!a.writeable()) throw py::value_error(std::string(what) + ": must be writable");
      if (static_cast<std::size_t>(a.shape(0)) < need) {
        throw py::value_error(std::string(what) + ": needs at least " + std::to_string(need) + " entries, has " +
                              std::to_string(a.shape(0)));
      }
    };
    require_1d<std::uint8_t>(mark, "mark");
    require_1d<std::uint32_t>(out_idx, "out_idx");
    require_1d<std::uint32_t>(out_slot, "out_slot");
    require_1d<std::uint8_t>(out_new, "out_new");
    require_1d<std::uint32_t>(in_idx, "in_idx");
    writable(mark, "mark", out.capacity());
    writable(out_idx, "out_idx", n_out);
    writable(out_slot, "out_slot", n_out);
    writable(out_new, "out_new", n_out);
    writable(in_idx, "in_idx", n_in);
    vnfkit::nfs::NatFastConfig cfg;
    cfg.public_addr = public_addr;
    cfg.close_timeout = close_timeout;
    py::array fr, fi;
    if (!fwd_rev.is_none()) {
      fr = fwd_rev.cast<py::array>();
      require_1d<std::uint8_t>(fr, "fwd_rev");
      if (fr.shape(0) != 65536) throw py::value_error("fwd_rev: needs 65536 entries");
      cfg.fwd_rev = static_cast<const std::uint8_t*>(fr.data());
    }
    if (!fwd_in.is_none()) {
      fi = fwd_in.cast<py::array>();
      require_1d<std::uint8_t>(fi, "fwd_in");
      if (fi.shape(0) != 65536) throw py::value_error("fwd_in: needs 65536 entries");
      cfg.fwd_in = static_cast<const std::uint8_t*>(fi.data());
    }
    const vnfkit::nfs::NatFastBuffers buf{static_cast<std::uint32_t*>(out_idx.mutable_data()),
                                          static_cast<std::uint32_t*>(out_slot.mutable_data()),
                                          static_cast<std::uint8_t*>(out_new.mutable_data()),
                                          static_cast<std::uint32_t*>(in_idx.mutable_data()),
                                          static_cast<std::uint8_t*>(mark.mutable_data())};
    const auto* o = static_cast<const std::uint32_t*>(oidx.data());
    const auto* i = static_cast<const std::uint32_t*>(iidx.data());
    vnfkit::nfs::NatFastResult r;
    {
      py::gil_scoped_release nogil;
      r = vnfkit::nfs::nat_fast_path(b, out, in, o, n_out, i, n_in, cfg, buf);
    }
    const int status = r.bailed ? 1 : r.out_expired ? 2 : r.in_expired ? 3 : 0;
    return py::make_tuple(status, r.out_deferred, r.in_deferred, r.translated, r.reverse_translated);
  }, py::arg("batch"), py::arg("out"), py::arg("inb"), py::arg("oidx").noconvert(), py::arg("iidx").noconvert(),
     py::arg("public_addr"), py::arg("close_timeout"), py::arg("fwd_rev").noconvert(), py::arg("fwd_in").noconvert(),
     py::arg("mark").noconvert(), py::arg("out_idx").noconvert(), py::arg("out_slot").noconvert(),
     py::arg("out_new").noconvert(), py::arg("in_idx").noconvert(),
     "NAT fast path over split_gateway's outbound / inbound lists (see nfs/gateway.hpp): refresh and\n"
     "rewrite the packets of existing mappings, defer the rest into out_idx/out_slot/out_new and in_idx.\n"
     "Returns (status, n_out_deferred, n_in_deferred, translated, reverse_translated); status 0 ok,\n"
     "1 bailed (a packet from a forward's server port: nothing done), 2 an outbound mapping had expired\n"
     "(everything deferred), 3 an inbound mapping had expired (every inbound packet deferred).");
}
