// Bridge for shared aggregate state (vnfkit::state) and determinant logging / output commit /
// replay (vnfkit::ftlog). Batch calls validate with the GIL held, then release it around the
// engine loop, so several Python worker threads really race on the shared state.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/ftlog/log.hpp"
#include "vnfkit/ftlog/output_commit.hpp"
#include "vnfkit/ftlog/replay.hpp"
#include "vnfkit/snapshot/snapshot.hpp"
#include "vnfkit/state/shared_state.hpp"

namespace st = vnfkit::state;
namespace fl = vnfkit::ftlog;
using vnfkit::bridge::require_1d;

namespace {

template <typename T>
std::span<const T> in(const py::array& a, const char* what) {
  require_1d<T>(a, what);
  return {static_cast<const T*>(a.data()), static_cast<std::size_t>(a.size())};
}

template <typename T>
std::span<const T> opt_in(const py::object& o, const char* what) {
  if (o.is_none()) return {};
  if (!py::isinstance<py::array>(o)) {
    throw py::type_error(std::string(what) + ": expected a numpy array or None, got " +
                         py::str(py::type::of(o)).cast<std::string>());
  }
  return in<T>(py::reinterpret_borrow<py::array>(o), what);
}

template <typename T>
std::pair<py::array_t<T>, std::span<T>> out_array(std::size_t n) {
  py::array_t<T> a(static_cast<py::ssize_t>(n));
  return {a, std::span<T>(a.mutable_data(), n)};
}

std::pair<py::array, std::span<std::uint8_t>> out_bool(std::size_t n) {
  py::array_t<bool> a(static_cast<py::ssize_t>(n));
  return {a, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(a.mutable_data()), n)};
}

py::bytes to_bytes(const std::vector<std::uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

std::span<const std::uint8_t> bytes_view(const py::bytes& b) {
  char* p = nullptr;
  py::ssize_t n = 0;
  PyBytes_AsStringAndSize(b.ptr(), &p, &n);
  return {reinterpret_cast<const std::uint8_t*>(p), static_cast<std::size_t>(n)};
}

// SnapshotError is registered as a Python exception by the flow bridge; here it becomes ValueError.
template <typename F>
void restoring(F&& f) {
  try {
    f();
  } catch (const vnfkit::snapshot::SnapshotError& e) {
    throw py::value_error(e.what());
  }
}

py::dtype determinant_dtype() {
  static py::object* cached = new py::object([] {
    py::list fields;
    fields.append(py::make_tuple("packet_id", "<u8"));
    fields.append(py::make_tuple("object", "<u2"));
    fields.append(py::make_tuple("op", "u1"));
    fields.append(py::make_tuple("flags", "u1"));
    fields.append(py::make_tuple("slot", "<u4"));
    fields.append(py::make_tuple("value", "<u8"));
    py::object dt = py::module_::import("numpy").attr("dtype")(fields);
    if (dt.attr("itemsize").cast<std::size_t>() != sizeof(fl::Determinant)) throw std::runtime_error("Determinant dtype size");
    return dt;
  }());
  return py::reinterpret_borrow<py::dtype>(*cached);
}

py::array records_array(const std::vector<fl::Determinant>& recs) {
  py::array a(determinant_dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(recs.size())});
  if (!recs.empty()) std::memcpy(a.mutable_data(), recs.data(), recs.size() * sizeof(fl::Determinant));
  return a;
}

std::vector<fl::Chunk> chunks_from(const py::object& chunks) {
  std::vector<fl::Chunk> out;
  auto add = [&](const py::handle& h) {
    if (!py::isinstance<py::bytes>(h)) {
      throw py::type_error("chunks: expected bytes or a list of bytes, got " + py::str(py::type::of(h)).cast<std::string>());
    }
    const auto b = py::reinterpret_borrow<py::bytes>(h);
    auto parsed = fl::parse_chunks(bytes_view(b));
    for (auto& c : parsed) out.push_back(std::move(c));
  };
  if (py::isinstance<py::bytes>(chunks)) {
    add(chunks);
  } else {
    for (py::handle h : chunks) add(h);
  }
  return out;
}

const char* mode_name(st::Mode m) {
  switch (m) {
    case st::Mode::kUnlogged: return "unlogged";
    case st::Mode::kLogged: return "logged";
    case st::Mode::kReplay: return "replay";
  }
  return "?";
}

py::array_t<std::uint32_t> reg_access(st::Registers& r, st::Context& ctx, st::RegOp op, const py::array& slots,
                                      const py::object& a, const py::object& b, const py::array& pids,
                                      const char* a_name, const char* b_name) {
  auto in_use = vnfkit::bridge::context_use(&ctx);
  auto s = in<std::uint64_t>(slots, "slots");
  auto av = opt_in<std::uint32_t>(a, a_name);
  auto bv = opt_in<std::uint32_t>(b, b_name);
  auto p = in<std::uint64_t>(pids, "packet_ids");
  auto [arr, out] = out_array<std::uint32_t>(s.size());
  {
    py::gil_scoped_release nogil;
    r.access(ctx, op, s, av, bv, p, out);
  }
  return arr;
}


}  // namespace

void bind_state(py::module_& m) {
  py::register_exception<fl::DivergenceError>(m, "DivergenceError", PyExc_RuntimeError);
  py::register_exception<fl::LogFullError>(m, "LogFullError", PyExc_RuntimeError);
  m.def("determinant_dtype", &determinant_dtype, "numpy dtype of one 24-byte determinant record.");
  m.def("parse_log_chunks", [](const py::bytes& data) {
    const auto chunks = fl::parse_chunks(bytes_view(data));
    py::list out;
    for (const auto& c : chunks) out.append(py::make_tuple(c.thread, c.first_position, records_array(c.records)));
    return out;
  }, py::arg("data"), "Parse concatenated log chunks into (thread, first_position, records) tuples.\n"
                      "Raises DivergenceError on a bad magic, truncation or CRC mismatch.");
  m.def("encode_log_chunk", [](std::uint16_t thread, std::uint64_t first_position, const py::array& records) {
    if (!records.dtype().is(determinant_dtype()) || records.ndim() != 1 || !(records.flags() & py::array::c_style)) {
      throw py::type_error("records: expected a C-contiguous 1-D array of determinant_dtype()");
    }
    std::span<const fl::Determinant> r(static_cast<const fl::Determinant*>(records.data()), static_cast<std::size_t>(records.size()));
    return to_bytes(fl::encode_chunk(thread, first_position, r));
  }, py::arg("thread"), py::arg("first_position"), py::arg("records").noconvert(),
     "Frame records as one checksummed chunk (the format drain_chunk() produces).");

  py::class_<st::Context, std::shared_ptr<st::Context>>(m, "Context",
      "Per-worker-thread recording context: every shared access made with it is unlogged, logged as a\n"
      "determinant in this thread's own log, or (replay) forced to the logged outcome. Not thread-safe:\n"
      "one per worker thread; concurrent use from two threads raises RuntimeError.")
      .def_property_readonly("thread", &st::Context::thread)
      .def_property_readonly("mode", [](const st::Context& c) { return std::string(mode_name(c.mode())); })
      .def_property_readonly("position", [](const st::Context& c) { return c.log().position(); },
                             "Absolute log position: records ever appended by this context.")
      .def_property_readonly("drained_position", [](const st::Context& c) { return c.log().drained_position(); })
      .def_property_readonly("held", [](const st::Context& c) { return c.log().held(); },
                             "Records appended but not yet drained.")
      .def_property_readonly("replay_remaining", &st::Context::replay_remaining)
      .def_property_readonly("log_capacity", [](const st::Context& c) { return c.log().capacity(); },
                             "Records the log holds before a drain (grows on the heap; fixed in shared memory).")
      .def_property_readonly("log_in_shared_memory", [](const st::Context& c) { return c.log().fixed(); })
      .def_property_readonly("log_full_events", [](const st::Context& c) { return c.log().full_events(); },
                             "Accesses refused with LogFullError because the shared-memory log was full.")
      .def("now_ns", [](st::Context& c, const py::array& pids) {
        auto in_use = vnfkit::bridge::context_use(&c);
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto [arr, out] = out_array<std::uint64_t>(p.size());
        { py::gil_scoped_release nogil; c.now_ns(p, out); }
        return arr;
      }, py::arg("packet_ids").noconvert(), "Wall-clock ns per packet, logged (or forced on replay).")
      .def("random_u64", [](st::Context& c, const py::array& pids) {
        auto in_use = vnfkit::bridge::context_use(&c);
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto [arr, out] = out_array<std::uint64_t>(p.size());
        { py::gil_scoped_release nogil; c.random_u64(p, out); }
        return arr;
      }, py::arg("packet_ids").noconvert(), "One random u64 per packet, logged (or forced on replay).")
      .def("drain_chunk", [](st::Context& c) {
        auto in_use = vnfkit::bridge::context_use(&c);
        if (c.mode() == st::Mode::kReplay) throw py::value_error("drain_chunk: a replay context has no log to drain");
        return to_bytes(c.log().drain_chunk(c.thread()));
      }, "Frame the held records as one checksummed chunk for stable storage and drop them.")
      .def("reset_log", [](st::Context& c, std::uint64_t position) {
        auto in_use = vnfkit::bridge::context_use(&c);
        c.log().reset(position);
      },
           py::arg("position") = 0, "Forget held records and restart positions at `position` (after a checkpoint).")
      .def("__repr__", [](const st::Context& c) {
        return "<vnfkit Context thread=" + std::to_string(c.thread()) + " mode=" + mode_name(c.mode()) +
               " position=" + std::to_string(c.log().position()) + ">";
      });

  py::class_<st::Counters, std::shared_ptr<st::Counters>>(m, "Counters",
      "Lock-free shared counters (direct slots, or keyed: any uint64 key but 2**64-1).")
      .def_property_readonly("name", &st::Counters::name)
      .def_property_readonly("id", &st::Counters::id)
      .def_property_readonly("slots", &st::Counters::slots)
      .def_property_readonly("keyed", &st::Counters::keyed)
      .def_property_readonly("full_events", &st::Counters::full_events)
      .def("add", [](st::Counters& c, st::Context& ctx, const py::array& keys, const py::array& deltas, const py::array& pids) {
        auto in_use = vnfkit::bridge::context_use(&ctx);
        auto k = in<std::uint64_t>(keys, "keys");
        auto d = in<std::int64_t>(deltas, "deltas");
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto [arr, out] = out_array<std::uint64_t>(k.size());
        { py::gil_scoped_release nogil; c.add(ctx, k, d, p, out); }
        return arr;
      }, py::arg("ctx"), py::arg("keys").noconvert(), py::arg("deltas").noconvert(), py::arg("packet_ids").noconvert(),
         "Add deltas[i] to the counter of keys[i]; returns the post-add values (2**64-1 if a keyed table is full).")
      .def("read", [](st::Counters& c, st::Context& ctx, const py::array& keys, const py::array& pids) {
        auto in_use = vnfkit::bridge::context_use(&ctx);
        auto k = in<std::uint64_t>(keys, "keys");
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto [arr, out] = out_array<std::uint64_t>(k.size());
        { py::gil_scoped_release nogil; c.read(ctx, k, p, out); }
        return arr;
      }, py::arg("ctx"), py::arg("keys").noconvert(), py::arg("packet_ids").noconvert())
      .def("get", &st::Counters::get, py::arg("key"), "Current value (control plane, unlogged).")
      .def("items", [](const st::Counters& c) {
        std::vector<std::uint64_t> k, v;
        c.items(k, v);
        return py::make_tuple(py::array_t<std::uint64_t>(static_cast<py::ssize_t>(k.size()), k.data()),
                              py::array_t<std::uint64_t>(static_cast<py::ssize_t>(v.size()), v.data()));
      }, "(keys, values) of every present counter (control plane).")
      .def("snapshot", [](const st::Counters& c) { return to_bytes(c.snapshot()); })
      .def("restore", [](st::Counters& c, const py::bytes& b) { restoring([&] { c.restore(bytes_view(b)); }); }, py::arg("image"));

  py::class_<st::TokenBuckets, std::shared_ptr<st::TokenBuckets>>(m, "TokenBuckets",
      "Lock-free token-bucket rate limiters (one 64-bit GCRA word per bucket).")
      .def_property_readonly("name", &st::TokenBuckets::name)
      .def_property_readonly("id", &st::TokenBuckets::id)
      .def_property_readonly("buckets", &st::TokenBuckets::buckets)
      .def_property_readonly("ns_per_token", &st::TokenBuckets::ns_per_token)
      .def("consume", [](st::TokenBuckets& t, st::Context& ctx, const py::array& buckets, const py::array& now,
                         const py::array& pids, const py::object& costs) {
        auto in_use = vnfkit::bridge::context_use(&ctx);
        auto b = in<std::uint64_t>(buckets, "buckets");
        auto n = in<std::uint64_t>(now, "now_ns");
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto c = opt_in<std::uint32_t>(costs, "costs");
        auto [arr, out] = out_bool(b.size());
        { py::gil_scoped_release nogil; t.consume(ctx, b, n, c, p, out); }
        return arr;
      }, py::arg("ctx"), py::arg("buckets").noconvert(), py::arg("now_ns").noconvert(), py::arg("packet_ids").noconvert(),
         py::arg("costs") = py::none(), "Take costs[i] (default 1) tokens from buckets[i]; returns a bool mask of allowed packets.")
      .def("tokens", &st::TokenBuckets::tokens, py::arg("bucket"), py::arg("now_ns"))
      .def("snapshot", [](const st::TokenBuckets& c) { return to_bytes(c.snapshot()); })
      .def("restore", [](st::TokenBuckets& c, const py::bytes& b) { restoring([&] { c.restore(bytes_view(b)); }); }, py::arg("image"));

  py::class_<st::PortPool, std::shared_ptr<st::PortPool>>(m, "PortPool",
      "Lock-free port pool with optional sub-pools (e.g. one per receive queue). Port 0 = exhausted.")
      .def_property_readonly("name", &st::PortPool::name)
      .def_property_readonly("id", &st::PortPool::id)
      .def_property_readonly("lo", &st::PortPool::lo)
      .def_property_readonly("hi", &st::PortPool::hi)
      .def_property_readonly("subpools", &st::PortPool::subpools)
      .def_property_readonly("exhausted_events", &st::PortPool::exhausted_events)
      .def_property_readonly("allocated_count", &st::PortPool::allocated_count)
      .def("allocate", [](st::PortPool& pp, st::Context& ctx, const py::array& pids, const py::object& subpool) {
        auto in_use = vnfkit::bridge::context_use(&ctx);
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto s = opt_in<std::uint16_t>(subpool, "subpool");
        auto [arr, out] = out_array<std::uint16_t>(p.size());
        { py::gil_scoped_release nogil; pp.allocate(ctx, p, s, out); }
        return arr;
      }, py::arg("ctx"), py::arg("packet_ids").noconvert(), py::arg("subpool") = py::none(),
         "One port per packet from sub-pool subpool[i] (default 0); 0 where the sub-pool is exhausted.")
      .def("release", [](st::PortPool& pp, st::Context& ctx, const py::array& ports, const py::array& pids) {
        auto in_use = vnfkit::bridge::context_use(&ctx);
        auto po = in<std::uint16_t>(ports, "ports");
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto [arr, out] = out_bool(po.size());
        { py::gil_scoped_release nogil; pp.release(ctx, po, p, out); }
        return arr;
      }, py::arg("ctx"), py::arg("ports").noconvert(), py::arg("packet_ids").noconvert(),
         "Free ports; returns a bool mask (False where the port was already free).")
      .def("is_allocated", &st::PortPool::is_allocated, py::arg("port"))
      .def("free_count", &st::PortPool::free_count, py::arg("subpool") = 0)
      .def("snapshot", [](const st::PortPool& c) { return to_bytes(c.snapshot()); })
      .def("restore", [](st::PortPool& c, const py::bytes& b) { restoring([&] { c.restore(bytes_view(b)); }); }, py::arg("image"));

  py::class_<st::Registers, std::shared_ptr<st::Registers>>(m, "Registers",
      "Generic lock-free shared registers: uint32 values, each with a 32-bit version.")
      .def_property_readonly("name", &st::Registers::name)
      .def_property_readonly("id", &st::Registers::id)
      .def_property_readonly("slots", &st::Registers::slots)
      .def("load", [](st::Registers& r, st::Context& ctx, const py::array& slots, const py::array& pids) {
        return reg_access(r, ctx, st::RegOp::kLoad, slots, py::none(), py::none(), pids, "values", "desired");
      }, py::arg("ctx"), py::arg("slots").noconvert(), py::arg("packet_ids").noconvert())
      .def("store", [](st::Registers& r, st::Context& ctx, const py::array& slots, const py::array& values, const py::array& pids) {
        return reg_access(r, ctx, st::RegOp::kStore, slots, values, py::none(), pids, "values", "desired");
      }, py::arg("ctx"), py::arg("slots").noconvert(), py::arg("values").noconvert(), py::arg("packet_ids").noconvert(),
         "Store values; returns the previous values.")
      .def("exchange", [](st::Registers& r, st::Context& ctx, const py::array& slots, const py::array& values, const py::array& pids) {
        return reg_access(r, ctx, st::RegOp::kExchange, slots, values, py::none(), pids, "values", "desired");
      }, py::arg("ctx"), py::arg("slots").noconvert(), py::arg("values").noconvert(), py::arg("packet_ids").noconvert())
      .def("fetch_add", [](st::Registers& r, st::Context& ctx, const py::array& slots, const py::array& deltas, const py::array& pids) {
        return reg_access(r, ctx, st::RegOp::kAdd, slots, deltas, py::none(), pids, "deltas", "desired");
      }, py::arg("ctx"), py::arg("slots").noconvert(), py::arg("deltas").noconvert(), py::arg("packet_ids").noconvert())
      .def("compare_exchange", [](st::Registers& r, st::Context& ctx, const py::array& slots, const py::array& expected,
                                  const py::array& desired, const py::array& pids) {
        return reg_access(r, ctx, st::RegOp::kCas, slots, expected, desired, pids, "expected", "desired");
      }, py::arg("ctx"), py::arg("slots").noconvert(), py::arg("expected").noconvert(), py::arg("desired").noconvert(),
         py::arg("packet_ids").noconvert(), "Returns the values seen; an access succeeded where it equals `expected`.")
      .def("get", &st::Registers::get, py::arg("slot"))
      .def("version", &st::Registers::version, py::arg("slot"))
      .def("snapshot", [](const st::Registers& c) { return to_bytes(c.snapshot()); })
      .def("restore", [](st::Registers& c, const py::bytes& b) { restoring([&] { c.restore(bytes_view(b)); }); }, py::arg("image"));

  py::class_<st::SharedBuffer, std::shared_ptr<st::SharedBuffer>>(m, "SharedBuffer", py::buffer_protocol(),
      "A raw shared byte region (zero-initialised, 64-byte aligned), for state that manages its own layout\n"
      "with atomics. Supports the buffer protocol (memoryview(buf), numpy.frombuffer). Not logged.")
      .def_property_readonly("name", &st::SharedBuffer::name)
      .def_property_readonly("id", &st::SharedBuffer::id)
      .def_property_readonly("nbytes", &st::SharedBuffer::size)
      .def_buffer([](st::SharedBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.size())}, {py::ssize_t{1}}, false);
      })
      .def("snapshot", [](const st::SharedBuffer& c) { return to_bytes(c.snapshot()); })
      .def("restore", [](st::SharedBuffer& c, const py::bytes& b) { restoring([&] { c.restore(bytes_view(b)); }); }, py::arg("image"));

  py::class_<st::SharedState, std::shared_ptr<st::SharedState>>(m, "SharedState",
      "Registry of one VNF's shared aggregate state and of its per-worker recording contexts.\n"
      "SharedState() keeps it on the heap (threads of one process); SharedState.create_shm(...) puts it in\n"
      "a POSIX shared-memory segment that other processes attach with SharedState.attach_shm(name).\n"
      "Declaring a variable creates it or, if any attached process declared it already, maps it: the\n"
      "same name with another kind or other parameters raises ValueError naming the variable.")
      .def(py::init([] { return std::make_shared<st::SharedState>(); }))
      .def_static("create_shm", [](const std::string& name, std::size_t size, std::size_t max_objects,
                                   std::size_t max_workers, std::size_t log_records) {
        st::ShmLimits l;
        l.max_objects = max_objects;
        l.max_workers = max_workers;
        l.log_records = log_records;
        return st::SharedState::create_shm(name, size, l);
      }, py::arg("name"), py::arg("size") = std::size_t{64} << 20, py::kw_only(), py::arg("max_objects") = 256,
         py::arg("max_workers") = 64, py::arg("log_records") = std::size_t{1} << 18,
         "Create shared-memory segment /dev/shm/<name> (name starts with 'vnfkit-') of `size` bytes holding the\n"
         "variables (at most `max_objects`) and one determinant log of `log_records` records per worker index\n"
         "< `max_workers`. This process owns it: close() (or the last reference going away) unlinks it.")
      .def_static("attach_shm", &st::SharedState::attach_shm, py::arg("name"),
                  "Map an existing shared-memory state (made by create_shm in another process).")
      .def_property_readonly("shm_name", [](const st::SharedState& s) -> py::object {
        if (!s.arena().is_shm()) return py::none();
        return py::str(s.arena().shm_name());
      }, "Segment name (None for a heap state).")
      .def_property_readonly("is_owner", [](const st::SharedState& s) { return s.arena().is_owner(); },
                             "True in the process that created the segment (and unlinks it).")
      .def_property_readonly("arena_bytes", [](const st::SharedState& s) { return s.arena().capacity_bytes(); })
      .def_property_readonly("arena_used", [](const st::SharedState& s) { return s.arena().used_bytes(); })
      .def_property_readonly("max_workers", [](const st::SharedState& s) {
        return s.arena().is_shm() ? s.arena().max_workers() : st::SharedState::kMaxThreads;
      })
      .def_property_readonly("closed", &st::SharedState::closed)
      .def("close", [](st::SharedState& s) { py::gil_scoped_release nogil; s.close(); },
           "Refuse further declarations; the owner unlinks the segment (objects still referenced stay mapped).")
      .def(py::pickle(
          [](const st::SharedState& s) {  // a shared-memory state pickles as its name
            if (!s.arena().is_shm()) {
              throw py::type_error("SharedState: a heap state cannot cross a process boundary; "
                                   "use SharedState.create_shm(...) for worker processes");
            }
            return py::make_tuple(s.arena().shm_name());
          },
          [](const py::tuple& t) {  // unpickling attaches it
            if (t.size() != 1) throw py::value_error("SharedState: bad pickle state");
            return st::SharedState::attach_shm(t[0].cast<std::string>());
          }))
      .def("__enter__", [](std::shared_ptr<st::SharedState> s) { return s; })
      .def("__exit__", [](st::SharedState& s, const py::args&) { s.close(); })
      .def("__len__", &st::SharedState::size)
      .def("counters", [](st::SharedState& s, const std::string& name, std::size_t slots, bool keyed) {
        return s.counters(name, slots, keyed);
      }, py::arg("name"), py::arg("slots"), py::arg("keyed") = false)
      .def("token_buckets", &st::SharedState::token_buckets, py::arg("name"), py::arg("buckets"), py::arg("rate_per_s"),
           py::arg("burst"))
      .def("port_pool", [](st::SharedState& s, const std::string& name, std::uint16_t lo, std::uint16_t hi, const py::object& sub) {
        return s.port_pool(name, lo, hi, opt_in<std::uint16_t>(sub, "subpool_of"));
      }, py::arg("name"), py::arg("lo") = 50000, py::arg("hi") = 65535, py::arg("subpool_of") = py::none())
      .def("registers", &st::SharedState::registers, py::arg("name"), py::arg("slots"), py::arg("initial") = 0)
      .def("buffer", &st::SharedState::buffer, py::arg("name"), py::arg("nbytes"),
           "A raw shared byte region of `nbytes` bytes (zero-initialised), declared like the other variables.")
      .def("context", [](st::SharedState& s, std::uint16_t thread, bool logged, std::optional<std::uint64_t> seed) {
        return s.context(thread, logged ? st::Mode::kLogged : st::Mode::kUnlogged,
                         seed ? *seed : 0x5EEDull + 0x9E3779B97F4A7C15ull * (thread + 1u));
      }, py::arg("thread"), py::arg("logged") = true, py::arg("seed") = py::none(),
         "The recording context of worker `thread` (created on first use).")
      .def("positions", [](const st::SharedState& s) {
        auto p = s.positions();
        return py::array_t<std::uint64_t>(static_cast<py::ssize_t>(p.size()), p.data());
      }, "Vector clock for output commit: each worker's log position, including batches in flight.")
      .def("positions_into", [](const st::SharedState& s, const py::buffer& out, py::ssize_t offset, py::ssize_t count) {
        // The same vector as positions(), written into words [offset, offset+count) of `out` (a
        // writable 1-D buffer of 8-byte unsigned words, e.g. a shared-memory board), zero past the
        // last worker: no array is made per call.
        py::buffer_info info = out.request(true);
        if (info.ndim != 1 || info.itemsize != 8 || (info.format != "Q" && info.format != "L" && info.format != "=Q" &&
                                                     info.format != "<Q") || info.strides[0] != 8) {
          throw py::type_error("out: expected a writable contiguous 1-D buffer of uint64 words, got format '" +
                               info.format + "'");
        }
        if (offset < 0 || count < 0 || offset > info.shape[0] || count > info.shape[0] - offset) {
          throw py::value_error("offset/count: [" + std::to_string(offset) + ", " + std::to_string(offset) + "+" +
                                std::to_string(count) + ") is outside out's " + std::to_string(info.shape[0]) + " words");
        }
        auto p = s.positions();
        if (p.size() > static_cast<std::size_t>(count)) {
          throw py::value_error("count: " + std::to_string(p.size()) + " workers have log positions, only " +
                                std::to_string(count) + " words given");
        }
        auto* dst = static_cast<std::uint64_t*>(info.ptr) + offset;
        std::copy(p.begin(), p.end(), dst);
        std::fill(dst + p.size(), dst + count, 0);
      }, py::arg("out"), py::arg("offset"), py::arg("count"),
         "positions() written into words [offset, offset+count) of `out` (writable uint64 buffer), zero past the "
         "last worker; ValueError if more workers than `count`.")
      .def("log_range", &st::SharedState::log_range, py::arg("thread"),
           "(drained position, end position) of worker `thread`'s log.")
      .def("read_log", [](const st::SharedState& s, std::uint16_t thread, std::optional<std::uint64_t> from) {
        std::vector<fl::Determinant> recs;
        std::uint64_t first = 0;
        {
          py::gil_scoped_release nogil;
          first = s.read_log(thread, from ? *from : s.log_range(thread).first, recs);
        }
        return py::make_tuple(first, records_array(recs));
      }, py::arg("thread"), py::arg("from_position") = py::none(),
         "(first position, records) of worker `thread`'s log from `from_position` (default: the drained position)\n"
         "to its end, without draining it; in shared memory readable from any process, also after the worker died.")
      .def("log_chunk", [](const st::SharedState& s, std::uint16_t thread, std::optional<std::uint64_t> from) {
        std::vector<fl::Determinant> recs;
        std::vector<std::uint8_t> chunk;
        {
          py::gil_scoped_release nogil;
          const auto first = s.read_log(thread, from ? *from : s.log_range(thread).first, recs);
          chunk = fl::encode_chunk(thread, first, recs);
        }
        return to_bytes(chunk);
      }, py::arg("thread"), py::arg("from_position") = py::none(),
         "read_log() framed as one checksummed chunk (what drain_chunk() would produce), for a Replayer.")
      .def("log_chunk_range", [](const st::SharedState& s, std::uint16_t thread, std::uint64_t from, std::uint64_t to) {
        std::vector<std::uint8_t> chunk;
        {
          py::gil_scoped_release nogil;
          chunk = s.chunk_range(thread, from, to);
        }
        return to_bytes(chunk);
      }, py::arg("thread"), py::arg("from_position"), py::arg("to_position"),
         "Records [from_position, to_position) of worker `thread`'s log framed as one checksummed chunk (the\n"
         "format of drain_chunk()), without draining it: one call for a slice that read_log() +\n"
         "encode_log_chunk() would frame. ValueError if the log no longer holds from_position or does not\n"
         "reach to_position yet.")
      .def("snapshot", [](const st::SharedState& s) { return to_bytes(s.snapshot()); })
      .def("restore", [](st::SharedState& s, const py::bytes& b) { restoring([&] { s.restore(bytes_view(b)); }); }, py::arg("image"))
      .def("__repr__", [](const st::SharedState& s) {
        if (!s.arena().is_shm()) return "<vnfkit SharedState heap variables=" + std::to_string(s.size()) + ">";
        return "<vnfkit SharedState shm='" + s.arena().shm_name() + "' variables=" + std::to_string(s.size()) +
               " used=" + std::to_string(s.arena().used_bytes()) + "/" + std::to_string(s.arena().capacity_bytes()) + ">";
      });

  py::class_<fl::OutputCommit>(m, "OutputCommit",
      "Holds emitted packets until the determinant-log positions they depend on are acknowledged.")
      .def(py::init<std::size_t, std::size_t>(), py::arg("threads"), py::arg("queues") = 1)
      .def_property_readonly("threads", &fl::OutputCommit::threads)
      .def_property_readonly("queues", &fl::OutputCommit::queues)
      .def("tag", [](fl::OutputCommit& oc, std::size_t queue, const py::array& pids, const py::array& positions) {
        auto p = in<std::uint64_t>(pids, "packet_ids");
        auto pos = in<std::uint64_t>(positions, "positions");
        py::gil_scoped_release nogil;
        oc.tag(queue, p, pos);
      }, py::arg("queue"), py::arg("packet_ids").noconvert(), py::arg("positions").noconvert())
      .def("ack", &fl::OutputCommit::ack, py::arg("thread"), py::arg("position"),
           "Cumulative: records [0, position) of `thread` are stable (a late smaller ack is ignored).")
      .def("ack_range", &fl::OutputCommit::ack_range, py::arg("thread"), py::arg("first"), py::arg("count"),
           "One chunk [first, first+count) is stable; ranges may arrive out of order.")
      .def("acked", &fl::OutputCommit::acked, py::arg("thread"))
      .def("release", [](fl::OutputCommit& oc, std::size_t queue) {
        std::vector<std::uint64_t> out;
        { py::gil_scoped_release nogil; oc.release(queue, out); }
        return py::array_t<std::uint64_t>(static_cast<py::ssize_t>(out.size()), out.data());
      }, py::arg("queue"), "Packet ids now releasable from `queue`, in tag order.")
      .def("release_count", [](fl::OutputCommit& oc, std::size_t queue) {
        thread_local std::vector<std::uint64_t> scratch;
        scratch.clear();
        std::size_t n;
        { py::gil_scoped_release nogil; n = oc.release(queue, scratch); }
        return n;
      }, py::arg("queue"), "As release(), but only how many packets (for a caller that holds the batches).")
      .def("pending", &fl::OutputCommit::pending, py::arg("queue"));

  py::class_<fl::Replayer>(m, "Replayer",
      "Replays determinant logs on a SharedState restored from a snapshot, forcing every logged outcome.")
      .def(py::init([](std::shared_ptr<st::SharedState> s, const py::object& chunks, const py::object& starts) {
        auto parsed = chunks_from(chunks);
        std::map<std::uint16_t, std::uint64_t> sp;
        if (!starts.is_none()) {
          try {
            sp = starts.cast<std::map<std::uint16_t, std::uint64_t>>();
          } catch (const py::cast_error&) {
            throw py::type_error("start_positions: expected a dict {thread (0..65535): log position (0..2**64-1)}, got " +
                                 py::repr(starts).cast<std::string>());
          }
        }
        return std::make_unique<fl::Replayer>(std::move(s), std::move(parsed), std::move(sp));
      }), py::arg("state"), py::arg("chunks"), py::arg("start_positions") = py::none())
      .def_property_readonly("threads", &fl::Replayer::threads)
      .def_property_readonly("finished", &fl::Replayer::finished)
      .def("context", &fl::Replayer::context, py::arg("thread"))
      .def("finish", &fl::Replayer::finish,
           "Check every record was consumed and the outcomes form one interleaving; install the final state.");
}
