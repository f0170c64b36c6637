// Bridge for the generic gateway primitives (vnfkit::nfs) used by the Python middleboxes.
#include "pybind.hpp"
#include "use_guard.hpp"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vnfkit/classify/toeplitz.hpp"
#include "vnfkit/nfs/gateway.hpp"
#include "vnfkit/state/context.hpp"
#include "vnfkit/state/port_pool.hpp"

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

// armed: None, or a writable C-contiguous uint8 array of exactly `capacity` entries (a GC index).
std::uint8_t* armed_bytes(const py::object& armed, std::size_t capacity) {
  if (armed.is_none()) return nullptr;
  if (!py::isinstance<py::array>(armed)) throw py::type_error("armed: expected a uint8 numpy array or None");
  auto a = armed.cast<py::array>();
  require_1d<std::uint8_t>(a, "armed");
  if (!a.writeable()) throw py::value_error("armed: must be writable");
  if (static_cast<std::size_t>(a.shape(0)) != capacity) {
    throw py::value_error("armed: needs exactly " + std::to_string(capacity) + " entries (the table's capacity), has " +
                          std::to_string(a.shape(0)));
  }
  return static_cast<std::uint8_t*>(a.mutable_data());
}

// fwd_rev / fwd_in: None (null) or a uint8 array of 65536 flags by port (held in `hold`).
const std::uint8_t* port_flags(const py::object& flags, const char* what, py::array& hold) {
  if (flags.is_none()) return nullptr;
  hold = flags.cast<py::array>();
  require_1d<std::uint8_t>(hold, what);
  if (hold.shape(0) != 65536) throw py::value_error(std::string(what) + ": needs 65536 entries");
  return static_cast<const std::uint8_t*>(hold.data());
}

// A validated NatFastConfig (without the forward flags) and the objects it points into, kept alive.
struct FastSetup {
  vnfkit::nfs::NatFastConfig cfg;
  std::shared_ptr<vnfkit::state::PortPool> tp, up;
  std::shared_ptr<vnfkit::state::Context> sctx;
  py::array cand_arr;
  py::object toeplitz_obj;

  FastSetup(std::uint32_t public_addr, std::uint64_t close_timeout, const py::object& tcp_pool,
            const py::object& udp_pool, const py::object& state_ctx, std::uint64_t tcp_timeout,
            std::uint64_t udp_timeout, std::uint16_t num_queues, std::uint16_t queue, const py::object& toeplitz,
            const py::object& cand, std::uint32_t reta_mask) {
    cfg.public_addr = public_addr;
    cfg.close_timeout = close_timeout;
    if (tcp_pool.is_none() && udp_pool.is_none() && state_ctx.is_none()) return;
    if (tcp_pool.is_none() || udp_pool.is_none() || state_ctx.is_none()) {
      throw py::value_error("tcp_pool, udp_pool, state_ctx: give all three or none");
    }
    tp = tcp_pool.cast<std::shared_ptr<vnfkit::state::PortPool>>();
    up = udp_pool.cast<std::shared_ptr<vnfkit::state::PortPool>>();
    sctx = state_ctx.cast<std::shared_ptr<vnfkit::state::Context>>();
    if (num_queues == 0 || queue >= num_queues) {
      throw py::value_error("queue: " + std::to_string(queue) + " is not below num_queues=" +
                            std::to_string(num_queues));
    }
    std::size_t groups = 1;
    if (!toeplitz.is_none()) {
      if (reta_mask > 0xFFFF || ((reta_mask + 1) & reta_mask) != 0) {
        throw py::value_error("reta_mask: must be a power of two minus one, at most 65535");
      }
      cand_arr = cand.cast<py::array>();
      require_1d<std::uint32_t>(cand_arr, "cand");
      cfg.cand = static_cast<const std::uint32_t*>(cand_arr.data());
      cfg.ncand = static_cast<std::size_t>(cand_arr.shape(0));
      for (std::size_t k = 0; k < cfg.ncand; ++k) {
        if (cfg.cand[k] > reta_mask) throw py::value_error("cand: entries must be at most reta_mask");
      }
      cfg.toeplitz = &toeplitz.cast<const vnfkit::classify::Toeplitz&>();
      toeplitz_obj = toeplitz;
      cfg.reta_mask = reta_mask;
      groups = std::size_t{reta_mask} + 1;
    } else if (!cand.is_none()) {
      throw py::value_error("cand: given without toeplitz");
    }
    // every sub-pool index the call can ask for must exist (checked here, not per packet)
    const std::size_t need = groups * num_queues;
    if (need > 65536 || tp->subpools() < need || up->subpools() < need) {
      throw py::value_error("tcp_pool, udp_pool: need " + std::to_string(need) +
                            " sub-pools for num_queues and reta_mask, have " + std::to_string(tp->subpools()) +
                            " / " + std::to_string(up->subpools()));
    }
    cfg.num_queues = num_queues;
    cfg.queue = queue;
    cfg.tcp_pool = tp.get();
    cfg.udp_pool = up.get();
    cfg.ctx = sctx.get();
    cfg.tcp_timeout = tcp_timeout;
    cfg.udp_timeout = udp_timeout;
  }
};

// The NAT's common case as one object made once per worker: the tables, buffers, pools and
// configuration of nat_fast_batch, so a batch costs one call with four arguments.
class NatFastPath {
 public:
  NatFastPath(const py::object& out, const py::object& in, std::uint32_t inside_net, std::uint32_t inside_mask,
              std::uint16_t out_port, std::uint16_t in_port, py::array mark, py::array out_idx, py::array out_slot,
              py::array out_new, py::array in_idx, const py::object& armed, FastSetup setup)
      : out_obj_(out), in_obj_(in), out_(&out.cast<vnfkit::flow::FlowTable&>()),
        in_(&in.cast<vnfkit::flow::FlowTable&>()), net_(inside_net), mask_(inside_mask), out_port_(out_port),
        in_port_(in_port), mark_(std::move(mark)), out_idx_(std::move(out_idx)), out_slot_(std::move(out_slot)),
        out_new_(std::move(out_new)), in_idx_(std::move(in_idx)), armed_(armed), st_(std::move(setup)) {
    if (out_->config().value_size != sizeof(vnfkit::nfs::NatRecord)) {
      throw py::value_error("out: values must be 32-byte NAT records, got " +
                            std::to_string(out_->config().value_size) + " bytes");
    }
    if (in_->config().value_size != sizeof(std::uint32_t)) {
      throw py::value_error("inb: values must be uint32 slots, got " + std::to_string(in_->config().value_size) +
                            " bytes");
    }
    require_1d<std::uint8_t>(mark_, "mark");
    require_1d<std::uint32_t>(out_idx_, "out_idx");
    require_1d<std::uint32_t>(out_slot_, "out_slot");
    require_1d<std::uint8_t>(out_new_, "out_new");
    require_1d<std::uint32_t>(in_idx_, "in_idx");
    for (auto* a : {&mark_, &out_idx_, &out_slot_, &out_new_, &in_idx_}) {
      if (!a->writeable()) throw py::value_error("mark, out_idx, out_slot, out_new, in_idx: must be writable");
    }
    if (static_cast<std::size_t>(mark_.shape(0)) != out_->capacity()) {
      throw py::value_error("mark: needs exactly " + std::to_string(out_->capacity()) + " entries, has " +
                            std::to_string(mark_.shape(0)));
    }
    batch_cap_ = static_cast<std::size_t>(std::min({out_idx_.shape(0), out_slot_.shape(0), out_new_.shape(0),
                                                    in_idx_.shape(0)}));
    buf_ = {static_cast<std::uint32_t*>(out_idx_.mutable_data()),
            static_cast<std::uint32_t*>(out_slot_.mutable_data()),
            static_cast<std::uint8_t*>(out_new_.mutable_data()),
            static_cast<std::uint32_t*>(in_idx_.mutable_data()),
            static_cast<std::uint8_t*>(mark_.mutable_data()), armed_bytes(armed, out_->capacity())};
  }

  py::tuple run(PacketBatch& b, const py::object& fwd_rev, const py::object& fwd_in, std::uint64_t gc_at) {
    if (b.size() > batch_cap_) {
      throw py::value_error("batch: " + std::to_string(b.size()) + " packets, more than the buffers' " +
                            std::to_string(batch_cap_));
    }
    vnfkit::bridge::UseGuard self_use(this, "NatFastPath", "use one per worker thread");
    auto batch_use = vnfkit::bridge::batch_write(&b);
    auto out_use = vnfkit::bridge::flow_table_use(out_);
    auto in_use = vnfkit::bridge::flow_table_use(in_);
    std::optional<vnfkit::bridge::UseGuard> ctx_use;
    if (st_.sctx) ctx_use.emplace(st_.sctx.get(), "Context", vnfkit::bridge::kContextRule);
    py::array fr, fi;
    vnfkit::nfs::NatFastConfig cfg = st_.cfg;
    cfg.fwd_rev = port_flags(fwd_rev, "fwd_rev", fr);
    cfg.fwd_in = port_flags(fwd_in, "fwd_in", fi);
    vnfkit::nfs::NatBatchResult r;
    {
      py::gil_scoped_release nogil;
      r = vnfkit::nfs::nat_fast_batch(b, *out_, *in_, net_, mask_, out_port_, in_port_, gc_at, cfg, buf_, scratch_);
    }
    if (r.gc_due) return py::make_tuple(5, r.min_ts, 0, 0, 0, 0, 0, 0, 0);
    const auto& f = r.fast;
    const int status = r.general ? 4 : f.out_expired ? 2 : f.in_expired ? 3 : 0;
    return py::make_tuple(status, f.out_deferred, f.in_deferred, f.translated, f.reverse_translated, f.new_mappings,
                          f.pool_exhausted, f.drop_exhausted, f.drop_table_full);
  }

  [[nodiscard]] std::size_t batch_capacity() const noexcept { return batch_cap_; }

 private:
  py::object out_obj_, in_obj_;  // keep the tables alive
  vnfkit::flow::FlowTable* out_;
  vnfkit::flow::FlowTable* in_;
  std::uint32_t net_, mask_;
  std::uint16_t out_port_, in_port_;
  py::array mark_, out_idx_, out_slot_, out_new_, in_idx_;
  py::object armed_;
  FastSetup st_;
  vnfkit::nfs::NatFastBuffers buf_{};
  std::size_t batch_cap_ = 0;
  vnfkit::nfs::SplitScratch scratch_;
};
}  // namespace

void bind_nfs(py::module_& m) {
  m.def("split_gateway", [](PacketBatch& b, std::uint32_t inside_net, std::uint32_t inside_mask, std::uint32_t addr,
                            std::uint16_t out_port, std::uint16_t in_port, bool ports_only, bool min_ts) {
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
    if (min_ts) {
      return py::tuple(py::make_tuple(src, dst, cut(out, c.outbound), cut(in, c.inbound), cut(other, c.other),
                            cut(nv4, c.not_v4), cut(out_np, c.outbound_np), cut(in_np, c.inbound_np), c.min_ts));
    }
    return py::tuple(py::make_tuple(src, dst, cut(out, c.outbound), cut(in, c.inbound), cut(other, c.other),
                                    cut(nv4, c.not_v4), cut(out_np, c.outbound_np), cut(in_np, c.inbound_np)));
  }, py::arg("batch"), py::arg("inside_net"), py::arg("inside_mask"), py::arg("addr"), py::arg("out_port") = 0,
     py::arg("in_port") = 0, py::arg("ports_only") = false, py::kw_only(), py::arg("min_ts") = false,
     "One pass over a parsed batch: returns (src, dst, outbound, inbound, other, not_v4, outbound_np,\n"
     "inbound_np). src/dst are host-order IPv4 addresses (uint32, 0 if not IPv4 or dropped); the uint32 index\n"
     "arrays hold the non-dropped packets going from the inside prefix to outside (not to addr), from outside\n"
     "to addr, other IPv4 (including non-first fragments), non-IPv4, and with ports_only=True the outbound /\n"
     "inbound packets that are not TCP/UDP. Sets batch.port: out_port / in_port for the outbound / inbound\n"
     "lists, 0 for every other packet. With min_ts=True a ninth item: the smallest ts_ns of the batch (every\n"
     "packet; 2**64-1 if empty).");

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
                            py::array& in_idx, const py::object& tcp_pool, const py::object& udp_pool,
                            const py::object& state_ctx, std::uint64_t tcp_timeout, std::uint64_t udp_timeout,
                            const py::object& armed, std::uint16_t num_queues, std::uint16_t queue,
                            const py::object& toeplitz, const py::object& cand, std::uint32_t reta_mask) {
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
    std::uint8_t* armed_p = armed_bytes(armed, out.capacity());
    FastSetup st(public_addr, close_timeout, tcp_pool, udp_pool, state_ctx, tcp_timeout, udp_timeout, num_queues,
                 queue, toeplitz, cand, reta_mask);
    py::array fr, fi;
    st.cfg.fwd_rev = port_flags(fwd_rev, "fwd_rev", fr);
    st.cfg.fwd_in = port_flags(fwd_in, "fwd_in", fi);
    std::optional<vnfkit::bridge::UseGuard> ctx_use;
    if (st.sctx) ctx_use.emplace(st.sctx.get(), "Context", vnfkit::bridge::kContextRule);
    const vnfkit::nfs::NatFastConfig& cfg = st.cfg;
    const vnfkit::nfs::NatFastBuffers buf{static_cast<std::uint32_t*>(out_idx.mutable_data()),
                                          static_cast<std::uint32_t*>(out_slot.mutable_data()),
                                          static_cast<std::uint8_t*>(out_new.mutable_data()),
                                          static_cast<std::uint32_t*>(in_idx.mutable_data()),
                                          static_cast<std::uint8_t*>(mark.mutable_data()), armed_p};
    const auto* o = static_cast<const std::uint32_t*>(oidx.data());
    const auto* i = static_cast<const std::uint32_t*>(iidx.data());
    vnfkit::nfs::NatFastResult r;
    {
      py::gil_scoped_release nogil;
      r = vnfkit::nfs::nat_fast_path(b, out, in, o, n_out, i, n_in, cfg, buf);
    }
    const int status = r.bailed ? 1 : r.out_expired ? 2 : r.in_expired ? 3 : 0;
    return py::make_tuple(status, r.out_deferred, r.in_deferred, r.translated, r.reverse_translated, r.new_mappings,
                          r.pool_exhausted, r.drop_exhausted, r.drop_table_full);
  }, py::arg("batch"), py::arg("out"), py::arg("inb"), py::arg("oidx").noconvert(), py::arg("iidx").noconvert(),
     py::arg("public_addr"), py::arg("close_timeout"), py::arg("fwd_rev").noconvert(), py::arg("fwd_in").noconvert(),
     py::arg("mark").noconvert(), py::arg("out_idx").noconvert(), py::arg("out_slot").noconvert(),
     py::arg("out_new").noconvert(), py::arg("in_idx").noconvert(), py::arg("tcp_pool") = py::none(),
     py::arg("udp_pool") = py::none(), py::arg("state_ctx") = py::none(), py::arg("tcp_timeout") = 0,
     py::arg("udp_timeout") = 0, py::arg("armed").noconvert() = py::none(), py::kw_only(),
     py::arg("num_queues") = 1, py::arg("queue") = 0, py::arg("toeplitz") = py::none(),
     py::arg("cand").noconvert() = py::none(), py::arg("reta_mask") = 0,
     "NAT fast path over split_gateway's outbound / inbound lists (see nfs/gateway.hpp): refresh and\n"
     "rewrite the packets of existing mappings, defer the rest into out_idx/out_slot/out_new and in_idx.\n"
     "With tcp_pool/udp_pool/state_ctx, new TCP/UDP flows get their port here (logged allocations):\n"
     "from this queue's share (sub-pool g * num_queues + queue) of sub-pool g, g = 0, or with toeplitz\n"
     "(the RSS hash), cand (uint32 RETA indices of this queue) and reta_mask, the affinity sub-pools\n"
     "cand[(start + r) % len(cand)] ^ base tried in rounds r = 0, 1, ... (see nfs/gateway.hpp).\n"
     "Returns (status, n_out_deferred, n_in_deferred, translated, reverse_translated, new_mappings,\n"
     "pool_exhausted, drop_pool_exhausted, drop_table_full); status 0 ok,\n"
     "1 bailed (a packet from a forward's server port: nothing done), 2 an outbound mapping had expired\n"
     "(everything deferred), 3 an inbound mapping had expired (every inbound packet deferred).\n"
     "armed (uint8, out's capacity; optional): nat_expired's GC index, set where a deadline leaves 0.");

  py::class_<NatFastPath>(m, "NatFastPath",
      "The NAT's common case as one object per worker (see nfs/gateway.hpp nat_fast_batch): holds the\n"
      "outbound and reply tables, the inside prefix, the output ports, the fast path's buffers and\n"
      "nat_fast_path's pool configuration, so a batch is one run() call.")
      .def(py::init([](const py::object& out, const py::object& inb, std::uint32_t inside_net,
                       std::uint32_t inside_mask, std::uint32_t public_addr, std::uint16_t out_port,
                       std::uint16_t in_port, std::uint64_t close_timeout, py::array mark, py::array out_idx,
                       py::array out_slot, py::array out_new, py::array in_idx, const py::object& armed,
                       const py::object& tcp_pool, const py::object& udp_pool, const py::object& state_ctx,
                       std::uint64_t tcp_timeout, std::uint64_t udp_timeout, std::uint16_t num_queues,
                       std::uint16_t queue, const py::object& toeplitz, const py::object& cand,
                       std::uint32_t reta_mask) {
             FastSetup st(public_addr, close_timeout, tcp_pool, udp_pool, state_ctx, tcp_timeout, udp_timeout,
                          num_queues, queue, toeplitz, cand, reta_mask);
             return std::make_unique<NatFastPath>(out, inb, inside_net, inside_mask, out_port, in_port,
                                                  std::move(mark), std::move(out_idx), std::move(out_slot),
                                                  std::move(out_new), std::move(in_idx), armed, std::move(st));
           }),
           py::arg("out"), py::arg("inb"), py::arg("inside_net"), py::arg("inside_mask"), py::arg("public_addr"),
           py::arg("out_port"), py::arg("in_port"), py::arg("close_timeout"), py::arg("mark").noconvert(),
           py::arg("out_idx").noconvert(), py::arg("out_slot").noconvert(), py::arg("out_new").noconvert(),
           py::arg("in_idx").noconvert(), py::arg("armed").noconvert() = py::none(), py::kw_only(),
           py::arg("tcp_pool") = py::none(), py::arg("udp_pool") = py::none(), py::arg("state_ctx") = py::none(),
           py::arg("tcp_timeout") = 0, py::arg("udp_timeout") = 0, py::arg("num_queues") = 1, py::arg("queue") = 0,
           py::arg("toeplitz") = py::none(), py::arg("cand").noconvert() = py::none(), py::arg("reta_mask") = 0)
      .def("run", &NatFastPath::run, py::arg("batch"), py::arg("fwd_rev").noconvert(),
           py::arg("fwd_in").noconvert(), py::arg("gc_at"),
           "Split the batch (split_gateway with ports_only) and, for a batch of TCP/UDP outbound and inbound\n"
           "packets only whose earliest packet time is below gc_at, run nat_fast_path on it. Returns\n"
           "nat_fast_path's tuple; status 4: the batch needs the general path (other packets, or a forward's\n"
           "server port); status 5: an expiry scan is due and the batch is otherwise the common one, item 1\n"
           "is its earliest packet time (scan, then call again with the next gc_at). After 4 or 5 nothing has\n"
           "been done but the split's output ports.")
      .def_property_readonly("batch_capacity", &NatFastPath::batch_capacity,
                             "The largest batch run() takes (the deferred buffers' length).");

  m.def("nat_expired", [](vnfkit::flow::FlowTable& out, std::uint64_t now, const py::object& armed) {
    auto use = vnfkit::bridge::flow_table_use(&out);
    std::uint8_t* armed_p = armed_bytes(armed, out.capacity());
    thread_local std::vector<std::uint32_t> scratch;  // grown to the largest table seen, reused
    if (scratch.size() < out.capacity()) scratch.resize(out.capacity());
    std::size_t k;
    {
      py::gil_scoped_release nogil;
      k = vnfkit::nfs::nat_expired(out, now, scratch.data(), armed_p);
    }
    py::array_t<std::uint32_t> slots(static_cast<py::ssize_t>(k));
    std::copy(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(k), slots.mutable_data());
    return slots;
  }, py::arg("out"), py::arg("now"), py::arg("armed").noconvert() = py::none(),
     "Slots (uint32, ascending) of the live entries of a NAT's outbound table whose record deadline is\n"
     "non-zero and <= now. With armed (uint8, one byte per slot, set by the caller wherever a deadline\n"
     "leaves 0; all ones is always valid) only armed records are read, same result; armed bytes of\n"
     "records found with deadline 0 or not live are cleared.");
}
