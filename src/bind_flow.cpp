// Bridge for the flow tables: RangeTable, ExceptionTable, FlowTable, steer(), SnapshotError.
// The public, documented Python API is python/vnfkit/tables.py; these are its native halves.
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/flow/exception_table.hpp"
#include "vnfkit/flow/flow_table.hpp"
#include "vnfkit/flow/published.hpp"
#include "vnfkit/flow/range_table.hpp"
#include "vnfkit/snapshot/snapshot.hpp"

namespace {

using vnfkit::flow::ExceptionTable;
using vnfkit::flow::FlowKey;
using vnfkit::flow::FlowTable;
using vnfkit::flow::FlowTableConfig;
using vnfkit::flow::kNever;
using vnfkit::flow::Range;
using vnfkit::flow::RangeTable;
using vnfkit::bridge::require_1d;

using SharedRanges = vnfkit::flow::Published<RangeTable>;
using SharedExceptions = vnfkit::flow::Published<ExceptionTable>;

// A C-contiguous 1-D array of FLOW_KEY_DTYPE.
const FlowKey* keys_ptr(const py::array& a, const char* what) {
  if (!a.dtype().equal(vnfkit::bridge::flow_key_dtype())) {
    throw py::type_error(std::string(what) + ": expected a numpy array of vnfkit.FLOW_KEY_DTYPE, got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  if (a.ndim() != 1) throw py::type_error(std::string(what) + ": expected a 1-D array");
  if (!(a.flags() & py::array::c_style)) {
    throw py::type_error(std::string(what) + ": array must be C-contiguous (got a strided view)");
  }
  return static_cast<const FlowKey*>(a.data());
}

template <typename T>
const T* col_ptr(const py::array& a, const char* what, std::size_t n) {
  require_1d<T>(a, what);
  if (static_cast<std::size_t>(a.size()) != n) {
    throw py::value_error(std::string(what) + ": length " + std::to_string(a.size()) +
                          " differs from the number of keys " + std::to_string(n));
  }
  return static_cast<const T*>(a.data());
}

template <typename T>
py::array_t<T> new_array(std::size_t n) {
  return py::array_t<T>(static_cast<py::ssize_t>(n));
}

py::array keys_copy(const FlowKey* p, std::size_t n) {
  py::array out(vnfkit::bridge::flow_key_dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(n)});
  if (n) std::memcpy(out.mutable_data(), p, n * sizeof(FlowKey));
  return out;
}

template <typename T>
py::array_t<T> vec_copy(const std::vector<T>& v) {
  auto out = new_array<T>(v.size());
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

std::span<const std::uint8_t> image_of(const py::buffer& b, py::buffer_info& info) {
  info = b.request();
  if (info.ndim > 1 || (info.ndim == 1 && info.itemsize != 1)) {
    throw py::type_error("image: expected bytes (a 1-D byte buffer)");
  }
  return {static_cast<const std::uint8_t*>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize)};
}

py::bytes to_bytes(const std::vector<std::uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

std::uint64_t timeout_or_never(std::optional<std::uint64_t> t) { return t ? *t : kNever; }
py::object never_or_value(std::uint64_t t) {
  return t == kNever ? py::object(py::none()) : py::object(py::int_(t));
}

std::vector<Range> to_ranges(const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& v) {
  std::vector<Range> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = Range{std::get<0>(v[i]), std::get<1>(v[i]), std::get<2>(v[i])};
  return r;
}

py::list from_ranges(const std::vector<Range>& r) {
  py::list out;
  for (const auto& x : r) out.append(py::make_tuple(x.lo, x.hi, x.target));
  return out;
}

// Optional `indices` (uint32) of the calls that work over batch rows without a gather: the row
// pointer (nullptr = every row) and the number of rows to process. Range checks are the engine's.
std::pair<const std::uint32_t*, std::size_t> row_selection(const std::optional<py::array>& indices,
                                                           std::size_t n_rows) {
  if (!indices) return {nullptr, n_rows};
  require_1d<std::uint32_t>(*indices, "indices");
  return {static_cast<const std::uint32_t*>(indices->data()), static_cast<std::size_t>(indices->size())};
}

}  // namespace

void bind_flow(py::module_& m) {
  static py::exception<vnfkit::snapshot::SnapshotError> exc(m, "SnapshotError", PyExc_ValueError);
  (void)exc;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const vnfkit::snapshot::SnapshotError& e) {
      py::set_error(exc, e.what());
    }
  });
  m.attr("NO_TARGET") = py::int_(vnfkit::flow::kNoTarget);
  m.attr("NO_SLOT") = py::int_(vnfkit::flow::kNoSlot);

  // ---------------------------------------------------------------- RangeTable
  // RangeTable and ExceptionTable are bound as Published<...>: every read takes the current
  // immutable version once (then releases the GIL), every update builds and publishes a new one,
  // so updates may run while other threads look up (they see the old or the new table).
  py::class_<SharedRanges>(m, "RangeTable", "Native RangeTable (use vnfkit.RangeTable). Safe under concurrent readers.")
      .def(py::init([](const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& r) {
             return std::make_unique<SharedRanges>(RangeTable(to_ranges(r)));
           }),
           py::arg("ranges"))
      .def("assign", [](SharedRanges& t, const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& r) {
             auto next = to_ranges(r);
             py::gil_scoped_release rel;
             t.update([&](RangeTable& x) { x.assign(next); });
           }, py::arg("ranges"))
      .def("split", [](SharedRanges& t, std::uint32_t mm, std::uint32_t new_target) {
             py::gil_scoped_release rel;
             return t.update([&](RangeTable& x) { return x.split(mm, new_target); });
           }, py::arg("m"), py::arg("new_target"))
      .def("merge", [](SharedRanges& t, std::uint32_t mm, std::optional<std::uint32_t> target) {
             py::gil_scoped_release rel;
             return t.update([&](RangeTable& x) { return x.merge(mm, target ? *target : vnfkit::flow::kNoTarget); });
           }, py::arg("m"), py::arg("target") = py::none())
      .def("set_target", [](SharedRanges& t, std::uint32_t flow_id, std::uint32_t target) {
             py::gil_scoped_release rel;
             t.update([&](RangeTable& x) { x.set_target(flow_id, target); });
           }, py::arg("flow_id"), py::arg("target"))
      .def("find", [](const SharedRanges& t, std::uint32_t flow_id) { return t.load()->find(flow_id); },
           py::arg("flow_id"))
      .def("lookup", [](const SharedRanges& t, const py::array& ids) {
             require_1d<std::uint32_t>(ids, "flow_ids");
             const auto n = static_cast<std::size_t>(ids.size());
             auto out = new_array<std::uint32_t>(n);
             const auto* in = static_cast<const std::uint32_t*>(ids.data());
             auto* o = out.mutable_data();
             {
               py::gil_scoped_release rel;
               t.load()->lookup(in, n, o);
             }
             return out;
           }, py::arg("flow_ids").noconvert())
      .def("ranges", [](const SharedRanges& t) { return from_ranges(t.load()->ranges()); })
      .def("__len__", [](const SharedRanges& t) { return t.load()->size(); })
      .def_property_readonly("version", &SharedRanges::version,
                             "Number of updates published so far (each update publishes one new version).")
      .def("snapshot", [](const SharedRanges& t) { return to_bytes(t.load()->snapshot()); })
      .def_static("restore", [](const py::buffer& b) {
             py::buffer_info info;
             return std::make_unique<SharedRanges>(RangeTable::restore(image_of(b, info)));
           }, py::arg("image"));

  // ---------------------------------------------------------------- ExceptionTable
  py::class_<SharedExceptions>(m, "ExceptionTable",
                               "Native ExceptionTable (use vnfkit.ExceptionTable). Safe under concurrent readers.")
      .def(py::init([](std::size_t capacity) { return std::make_unique<SharedExceptions>(ExceptionTable(capacity)); }),
           py::arg("capacity") = 0)
      .def_property_readonly("capacity", [](const SharedExceptions& t) { return t.load()->capacity(); })
      .def("__len__", [](const SharedExceptions& t) { return t.load()->size(); })
      .def("memory_bytes", [](const SharedExceptions& t) { return t.load()->memory_bytes(); })
      .def_property_readonly("version", &SharedExceptions::version,
                             "Number of updates published so far (each update publishes one new version).")
      .def("insert", [](SharedExceptions& t, const py::array& keys, const py::array& targets, bool strict) {
             // strict: all or nothing, decided on the version being changed (so two writers cannot
             // both pass the check); the refused keys are counted. Returns (ok, n_new, size_before):
             // ok is None when a strict insert did not fit.
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n = static_cast<std::size_t>(keys.size());
             const auto* tg = col_ptr<std::uint32_t>(targets, "targets", n);
             auto ok = new_array<bool>(n);
             auto* o = reinterpret_cast<std::uint8_t*>(ok.mutable_data());
             std::size_t fresh = 0, before = 0;
             bool fitted = true;
             {
               py::gil_scoped_release rel;
               t.update([&](ExceptionTable& x) {
                 before = x.size();
                 if (strict && x.capacity() != 0) {
                   fresh = x.count_new(k, n);
                   if (before + fresh > x.capacity()) {
                     x.count_failed(before + fresh - x.capacity());
                     fitted = false;
                     return;
                   }
                 }
                 x.insert(k, tg, n, o);
               });
             }
             return py::make_tuple(fitted ? py::object(ok) : py::object(py::none()), fresh, before);
           }, py::arg("keys").noconvert(), py::arg("targets").noconvert(), py::arg("strict") = false)
      .def("remove", [](SharedExceptions& t, const py::array& keys) {
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n = static_cast<std::size_t>(keys.size());
             auto out = new_array<bool>(n);
             auto* o = reinterpret_cast<std::uint8_t*>(out.mutable_data());
             {
               py::gil_scoped_release rel;
               t.update([&](ExceptionTable& x) { x.erase(k, n, o); });
             }
             return out;
           }, py::arg("keys").noconvert())
      .def("lookup", [](const SharedExceptions& t, const py::array& keys) {
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n = static_cast<std::size_t>(keys.size());
             auto out = new_array<std::uint32_t>(n);
             auto* o = out.mutable_data();
             {
               py::gil_scoped_release rel;
               t.load()->lookup(k, n, o);
             }
             return out;
           }, py::arg("keys").noconvert())
      .def("keys", [](const SharedExceptions& t) {
             const auto v = t.load();
             return keys_copy(v->keys().data(), v->size());
           })
      .def("targets", [](const SharedExceptions& t) {
             const auto v = t.load();
             return vec_copy(std::vector<std::uint32_t>(v->targets().begin(), v->targets().end()));
           })
      .def("contents", [](const SharedExceptions& t) {
             const auto v = t.load();  // keys and targets of one version
             return py::make_tuple(keys_copy(v->keys().data(), v->size()),
                                   vec_copy(std::vector<std::uint32_t>(v->targets().begin(), v->targets().end())));
           }, "(keys, targets): aligned copies taken from one version of the table.")
      .def("clear", [](SharedExceptions& t) {
             py::gil_scoped_release rel;
             t.update([](ExceptionTable& x) { x.clear(); });
           })
      .def("stats", [](const SharedExceptions& t) {
             const auto v = t.load();
             py::dict d;
             d["size"] = v->size();
             d["capacity"] = v->capacity();
             d["inserts"] = v->stats().inserts;
             d["updates"] = v->stats().updates;
             d["failed_inserts"] = v->stats().failed_inserts;
             d["removals"] = v->stats().removals;
             d["memory_bytes"] = v->memory_bytes();
             return d;
           })
      .def("snapshot", [](const SharedExceptions& t) { return to_bytes(t.load()->snapshot()); })
      .def_static("restore", [](const py::buffer& b) {
             py::buffer_info info;
             return std::make_unique<SharedExceptions>(ExceptionTable::restore(image_of(b, info)));
           }, py::arg("image"));

  m.def("steer", [](const py::array& keys, const py::array& flow_ids, const SharedRanges& ranges,
                    const std::vector<const SharedExceptions*>& tables) {
          const FlowKey* k = keys_ptr(keys, "keys");
          const auto n = static_cast<std::size_t>(keys.size());
          const auto* ids = col_ptr<std::uint32_t>(flow_ids, "flow_ids", n);
          for (const auto* t : tables) {
            if (!t) throw py::type_error("exceptions: entries must be ExceptionTable objects");
          }
          auto out = new_array<std::uint32_t>(n);
          auto* o = out.mutable_data();
          {
            py::gil_scoped_release rel;
            // One version of each table for the whole batch (held until the call returns).
            const auto rv = ranges.load();
            std::vector<SharedExceptions::Version> held;
            std::vector<const ExceptionTable*> ex;
            held.reserve(tables.size());
            ex.reserve(tables.size());
            for (const auto* t : tables) {
              held.push_back(t->load());
              ex.push_back(held.back().get());
            }
            vnfkit::flow::steer(ex, *rv, k, ids, n, o);
          }
          return out;
        }, py::arg("keys").noconvert(), py::arg("flow_ids").noconvert(), py::arg("ranges"),
        py::arg("exceptions"));

  // ---------------------------------------------------------------- FlowTable
  py::class_<FlowTable>(m, "FlowTable", "Native FlowTable (use vnfkit.FlowTable). Not thread-safe: one per worker thread; concurrent use raises RuntimeError.")
      .def(py::init([](std::uint32_t capacity, std::uint32_t value_size, std::optional<std::uint64_t> idle,
                       std::optional<std::uint64_t> close, std::uint64_t tick,
                       std::optional<std::vector<std::optional<std::uint64_t>>> class_timeouts,
                       std::optional<std::vector<std::uint8_t>> on_close,
                       std::optional<std::vector<std::uint8_t>> class_of_proto) {
             FlowTableConfig c;
             c.capacity = capacity;
             c.value_size = value_size;
             c.idle_timeout_ns = timeout_or_never(idle);
             c.close_timeout_ns = timeout_or_never(close);
             c.tick_ns = tick;
             if (class_timeouts) {
               if (idle || close) {
                 throw py::value_error("timeout_classes: give either classes or idle/close timeouts, not both");
               }
               const std::size_t n = class_timeouts->size();
               if (n == 0) throw py::value_error("timeout_classes: must name at least one class");
               if (on_close && on_close->size() != n) {
                 throw py::value_error("on_close: one entry per timeout class expected");
               }
               for (std::size_t i = 0; i < n; ++i) {
                 c.classes.push_back({timeout_or_never((*class_timeouts)[i]),
                                      on_close ? (*on_close)[i] : vnfkit::flow::kSameClass});
               }
               if (class_of_proto) {
                 if (class_of_proto->size() != 256) {
                   throw py::value_error("class_of_proto: 256 entries (one per IP protocol) expected");
                 }
                 std::copy(class_of_proto->begin(), class_of_proto->end(), c.class_of_proto.begin());
               }
             } else if (on_close || class_of_proto) {
               throw py::value_error("on_close / class_of_proto: need timeout_classes");
             }
             return FlowTable(c);
           }),
           py::arg("capacity"), py::arg("value_size"), py::arg("idle_timeout_ns") = py::none(),
           py::arg("close_timeout_ns") = py::none(), py::arg("tick_ns") = 0,
           py::arg("timeout_classes") = py::none(), py::arg("on_close") = py::none(),
           py::arg("class_of_proto") = py::none())
      .def_property_readonly("capacity", &FlowTable::capacity)
      .def_property_readonly("value_size", [](const FlowTable& t) { return t.config().value_size; })
      .def_property_readonly("idle_timeout_ns", [](const FlowTable& t) { return never_or_value(t.config().idle_timeout_ns); })
      .def_property_readonly("close_timeout_ns", [](const FlowTable& t) { return never_or_value(t.config().close_timeout_ns); })
      .def_property_readonly("tick_ns", [](const FlowTable& t) { return t.config().tick_ns; })
      .def_property_readonly("timeout_classes", [](const FlowTable& t) {
             py::list out;  // (timeout_ns or None, on_close class or None) per class
             for (const auto& c : t.config().classes) {
               out.append(py::make_tuple(never_or_value(c.timeout_ns),
                                         c.on_close == vnfkit::flow::kSameClass ? py::object(py::none())
                                                                                 : py::object(py::int_(c.on_close))));
             }
             return out;
           })
      .def_property_readonly("class_of_proto", [](const FlowTable& t) {
             const auto& a = t.config().class_of_proto;
             return std::vector<std::uint8_t>(a.begin(), a.end());
           })
      .def_property_readonly("now_ns", &FlowTable::now_ns)
      .def("__len__", &FlowTable::size)
      .def("memory_bytes", &FlowTable::memory_bytes)
      .def_property("user_meta", [](const FlowTable& t) { return py::bytes(t.user_meta()); },
                    [](FlowTable& t, const py::bytes& b) {
                      auto in_use = vnfkit::bridge::flow_table_use(&t);
                      t.set_user_meta(std::string(b));
                    })
      .def("entries_raw", [](py::object self) {
             // Read-only: the entries mirror the index, the free list and the timer wheel, so a write
             // here (e.g. marking a free slot live) would silently corrupt the table.
             auto& t = self.cast<FlowTable&>();
             auto v = vnfkit::bridge::view1d(reinterpret_cast<std::uint8_t*>(t.entries()),
                                             t.capacity() * sizeof(vnfkit::flow::FlowEntry), self);
             v.attr("flags").attr("writeable") = false;
             return v;
           })
      .def("values_raw", [](py::object self) {
             auto& t = self.cast<FlowTable&>();
             return vnfkit::bridge::view1d(t.values(), t.capacity() * t.config().value_size, self);
           })
      .def("lookup", [](FlowTable& t, const py::array& keys, std::optional<py::array> indices) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n_rows = static_cast<std::size_t>(keys.size());
             const auto [rows, n] = row_selection(indices, n_rows);
             auto out = new_array<std::uint32_t>(n);
             auto* o = out.mutable_data();
             {
               py::gil_scoped_release rel;
               if (rows) t.lookup_rows(k, n_rows, rows, n, o); else t.lookup(k, n, o);
             }
             return out;
           }, py::arg("keys").noconvert(), py::arg("indices").noconvert() = py::none(),
           "Slots of keys (kNoSlot for a miss); with indices (uint32), of keys[indices] without a gather.")
      .def("lookup_or_insert", [](FlowTable& t, const py::array& keys, const py::array& flow_ids,
                                  const py::array& ts_ns, std::optional<py::array> tcp_flags,
                                  std::optional<py::array> indices, std::optional<py::array> classes,
                                  bool report_stale) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n_rows = static_cast<std::size_t>(keys.size());
             const auto* ids = col_ptr<std::uint32_t>(flow_ids, "flow_ids", n_rows);
             const auto* ts = col_ptr<std::uint64_t>(ts_ns, "ts_ns", n_rows);
             const std::uint8_t* fl = tcp_flags ? col_ptr<std::uint8_t>(*tcp_flags, "tcp_flags", n_rows) : nullptr;
             const std::uint8_t* cl = classes ? col_ptr<std::uint8_t>(*classes, "timeout_class", n_rows) : nullptr;
             const auto [rows, n] = row_selection(indices, n_rows);
             auto slots = new_array<std::uint32_t>(n);
             auto is_new = new_array<bool>(n);
             auto stale = new_array<bool>(report_stale ? n : 0);
             auto* so = slots.mutable_data();
             auto* no = reinterpret_cast<std::uint8_t*>(is_new.mutable_data());
             auto* st = report_stale ? reinterpret_cast<std::uint8_t*>(stale.mutable_data()) : nullptr;
             {
               py::gil_scoped_release rel;
               if (rows) {
                 t.lookup_or_insert_rows(k, ids, ts, fl, n_rows, rows, n, so, no, cl, st);
               } else {
                 t.lookup_or_insert(k, ids, ts, fl, n, so, no, cl, st);
               }
             }
             if (report_stale) return py::tuple(py::make_tuple(slots, is_new, stale));
             return py::tuple(py::make_tuple(slots, is_new));
           }, py::arg("keys").noconvert(), py::arg("flow_ids").noconvert(), py::arg("ts_ns").noconvert(),
           py::arg("tcp_flags").noconvert() = py::none(), py::arg("indices").noconvert() = py::none(),
           py::arg("classes").noconvert() = py::none(), py::arg("report_stale") = false,
           "Lookup inserting missing flows; with indices (uint32), over rows indices of the (equally long)\n"
           "keys / flow_ids / ts_ns / tcp_flags / classes columns, without a gather. classes (uint8): the\n"
           "timeout class of a flow each row creates (default: by protocol). Returns (slots, is_new), or\n"
           "(slots, is_new, stale) with report_stale.")
      .def("touch", [](FlowTable& t, const py::array& slots, const py::array& ts_ns,
                       std::optional<py::array> tcp_flags, std::optional<py::array> indices) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             require_1d<std::uint32_t>(slots, "slots");
             require_1d<std::uint64_t>(ts_ns, "ts_ns");
             const auto n_rows = static_cast<std::size_t>(ts_ns.size());
             const std::uint8_t* fl = tcp_flags ? col_ptr<std::uint8_t>(*tcp_flags, "tcp_flags", n_rows) : nullptr;
             const std::uint32_t* rows = nullptr;
             const auto n = static_cast<std::size_t>(slots.size());
             if (indices) {
               rows = row_selection(indices, n_rows).first;
               if (static_cast<std::size_t>(indices->size()) != n) {
                 throw py::value_error("indices: one row per slot expected");
               }
             } else if (n_rows != n) {
               throw py::value_error("ts_ns: length " + std::to_string(n_rows) + " differs from the number of slots " +
                                     std::to_string(n));
             }
             auto stale = new_array<bool>(n);
             auto* st = reinterpret_cast<std::uint8_t*>(stale.mutable_data());
             const auto* sp = static_cast<const std::uint32_t*>(slots.data());
             const auto* tp = static_cast<const std::uint64_t*>(ts_ns.data());
             std::size_t count = 0;
             {
               py::gil_scoped_release rel;
               count = t.touch(sp, n, tp, fl, rows, n_rows, st);
             }
             return py::make_tuple(stale, count);
           }, py::arg("slots").noconvert(), py::arg("ts_ns").noconvert(), py::arg("tcp_flags").noconvert() = py::none(),
           py::arg("indices").noconvert() = py::none(),
           "Refresh live flows by slot at the times (and TCP flags) of rows indices (default: row j for\n"
           "slot j); returns (stale mask, number stale).")
      .def("set_class", [](FlowTable& t, const py::array& slots, std::uint8_t cls) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             require_1d<std::uint32_t>(slots, "slots");
             t.set_class(static_cast<const std::uint32_t*>(slots.data()), static_cast<std::size_t>(slots.size()), cls);
           }, py::arg("slots").noconvert(), py::arg("timeout_class"))
      .def("remove", [](FlowTable& t, const py::array& keys) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             const FlowKey* k = keys_ptr(keys, "keys");
             const auto n = static_cast<std::size_t>(keys.size());
             auto out = new_array<bool>(n);
             t.remove(k, n, reinterpret_cast<std::uint8_t*>(out.mutable_data()));
             return out;
           }, py::arg("keys").noconvert())
      .def("remove_slots", [](FlowTable& t, const py::array& slots) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             require_1d<std::uint32_t>(slots, "slots");
             const auto* s = static_cast<const std::uint32_t*>(slots.data());
             std::size_t c = 0;
             for (py::ssize_t i = 0; i < slots.size(); ++i) c += t.remove_slot(s[i]) ? 1 : 0;
             return c;
           }, py::arg("slots").noconvert())
      .def("expire", [](FlowTable& t, std::uint64_t now) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             vnfkit::flow::Expired e;
             {
               py::gil_scoped_release rel;
               t.expire(now, e);
             }
             const std::size_t n = e.slots.size();
             std::vector<FlowKey> keys(n);
             std::vector<std::uint32_t> ids(n);
             std::vector<std::uint64_t> last(n);
             std::vector<std::uint8_t> cls(n);
             for (std::size_t i = 0; i < n; ++i) {
               keys[i] = e.entries[i].key;
               ids[i] = e.entries[i].flow_id;
               last[i] = e.entries[i].last_ts;
               cls[i] = e.entries[i].tclass;
             }
             return py::make_tuple(vec_copy(e.slots), keys_copy(keys.data(), n), vec_copy(ids), vec_copy(last),
                                   vec_copy(e.deadlines), vec_copy(e.reasons), vec_copy(e.values), vec_copy(cls));
           }, py::arg("now_ns"))
      .def("active_in_range", [](const FlowTable& t, std::uint32_t lo, std::uint32_t hi, std::uint64_t since) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             if (lo > hi) throw py::value_error("active_in_range: lo must be <= hi");
             return vec_copy(t.active_in_range(lo, hi, since));
           }, py::arg("lo"), py::arg("hi"), py::arg("since_ns") = 0)
      .def("live_slots", [](const FlowTable& t, bool mark_dirty) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             return vec_copy(t.live_slots(mark_dirty));
           }, py::arg("mark_dirty") = true)
      .def("deadline", [](const FlowTable& t, std::uint32_t slot) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             if (!t.live(slot)) throw py::value_error("deadline: slot is not live");
             return never_or_value(t.deadline(slot));
           }, py::arg("slot"))
      .def("clear", [](FlowTable& t) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             t.clear();
           })
      .def("stats", [](const FlowTable& t) {
             const auto& s = t.stats();
             py::dict d;
             d["size"] = t.size();
             d["capacity"] = t.capacity();
             d["load"] = static_cast<double>(t.size()) / static_cast<double>(t.capacity());
             d["lookups"] = s.lookups;
             d["hits"] = s.hits;
             d["misses"] = s.misses;
             d["inserts"] = s.inserts;
             d["failed_inserts"] = s.failed_inserts;
             d["removals"] = s.removals;
             d["expired_idle"] = s.expired_idle;
             d["expired_closed"] = s.expired_closed;
             d["expirations"] = s.expired_idle + s.expired_closed;
             d["memory_bytes"] = t.memory_bytes();
             d["bytes_per_entry"] = static_cast<double>(t.memory_bytes()) / static_cast<double>(t.capacity());
             return d;
           })
      .def("snapshot", [](const FlowTable& t) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             return to_bytes(t.snapshot());
           })
      .def_static("restore", [](const py::buffer& b) {
             py::buffer_info info;
             return FlowTable::restore(image_of(b, info));
           }, py::arg("image"))
      .def("restore_in_place", [](FlowTable& t, const py::buffer& b) {
             py::buffer_info info;
             auto image = image_of(b, info);
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             t.restore_in_place(image);
           }, py::arg("image"))
      .def("mark_dirty", [](FlowTable& t, const py::array& slots) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             require_1d<std::uint32_t>(slots, "slots");
             t.mark_dirty(static_cast<const std::uint32_t*>(slots.data()), static_cast<std::size_t>(slots.size()));
           }, py::arg("slots").noconvert(),
           "Mark slots whose value records the caller writes by a slot number kept from earlier.")
      .def("dirty_count", [](const FlowTable& t) { return t.dirty_count(); },
           "Slots marked dirty since the last take_delta() / clear_dirty().")
      .def("take_delta", [](FlowTable& t) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             return to_bytes(t.take_delta());
           }, "What changed since the last take_delta() / clear_dirty() (for a FlowTableImage); starts a new interval.")
      .def("clear_dirty", [](FlowTable& t) {
             auto in_use = vnfkit::bridge::flow_table_use(&t);
             t.clear_dirty();
           }, "Start a new dirty interval without a delta (right after a snapshot() that seeds an image).");

  py::class_<vnfkit::flow::FlowTableImage>(
      m, "FlowTableImage",
      "A FlowTable's image kept outside the table: built from its snapshot(), brought up to date by each later\n"
      "take_delta() in order; snapshot() then equals the table's own snapshot() byte for byte.")
      .def(py::init([](const py::buffer& b) {
             py::buffer_info info;
             return vnfkit::flow::FlowTableImage(image_of(b, info));
           }), py::arg("image"))
      .def("apply", [](vnfkit::flow::FlowTableImage& im, const py::buffer& b) {
             py::buffer_info info;
             auto d = image_of(b, info);
             im.apply(d);
           }, py::arg("delta"), "Apply the table's next delta (SnapshotError if it is not the next one or is malformed).")
      .def("snapshot", [](const vnfkit::flow::FlowTableImage& im) { return to_bytes(im.snapshot()); })
      .def("take_delta", [](vnfkit::flow::FlowTableImage& im) {
             try {
               return to_bytes(im.take_delta());
             } catch (const std::logic_error& e) {
               throw py::value_error(e.what());
             }
           }, "One delta equal to every delta applied since the last take_delta() / clear_delta() (ValueError if none).")
      .def("clear_delta", &vnfkit::flow::FlowTableImage::clear_delta, "Start a new span of deltas without taking one.")
      .def_property_readonly("pending_intervals", &vnfkit::flow::FlowTableImage::pending_intervals,
                             "Table intervals covered by the deltas applied since the last take_delta() / clear_delta().")
      .def("__len__", &vnfkit::flow::FlowTableImage::size)
      .def_property_readonly("deltas", &vnfkit::flow::FlowTableImage::deltas,
                             "The table's interval count after the last delta applied (0 before any).");
}
