// Bridge for the runtime's shared-memory rings (vnfkit::runtime::SlabRing + SlabLayout).
//
// A Python SlabRing is built over a writable buffer the caller owns (an mmap of a /dev/shm file made
// by vnfkit.runtime); it holds that buffer exported for as long as the ring or any batch wrapping one
// of its slabs lives, so the mapping cannot be closed under them. Waits release the GIL.
#include <chrono>
#include <cstring>
#include <memory>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/runtime/ring.hpp"
#include "vnfkit/runtime/slab.hpp"

using vnfkit::packet::PacketBatch;
using vnfkit::runtime::RingConfig;
using vnfkit::runtime::SlabLayout;
using vnfkit::runtime::SlabRing;

namespace {

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::uint64_t timeout_ns(double seconds) {
  if (!(seconds >= 0) || seconds > 3600) throw py::value_error("timeout: must be in [0, 3600] seconds");
  return static_cast<std::uint64_t>(seconds * 1e9);
}

class PyRing {
 public:
  PyRing(const py::buffer& mem, bool create, std::uint32_t slots, std::uint64_t slab_bytes, std::uint32_t max_packets)
      : info_(mem.request(true)),
        ring_(open(info_, create, slots, slab_bytes)),
        layout_(max_packets, ring_.config().slab_bytes) {
    if (create) {
      for (std::uint32_t c = 0; c < ring_.config().slots; ++c) layout_.reset(ring_.slab(c));
    }
  }

  SlabRing& ring() { return ring_; }
  const SlabLayout& layout() const { return layout_; }

  // A keep-alive for batches over our slabs: a reference to the Python ring object, dropped with the GIL.
  static std::shared_ptr<void> keep(const py::object& self) {
    auto* obj = new py::object(self);
    return {obj, [](py::object* o) {
              py::gil_scoped_acquire gil;
              delete o;
            }};
  }

 private:
  static SlabRing open(const py::buffer_info& info, bool create, std::uint32_t slots, std::uint64_t slab_bytes) {
    if (info.readonly) throw py::type_error("mem: the buffer must be writable");
    std::span<std::byte> mem(static_cast<std::byte*>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize));
    return create ? SlabRing::create(mem, RingConfig{slots, slab_bytes}) : SlabRing::attach(mem);
  }

  py::buffer_info info_;  // holds the export of `mem` (mmap.close() then refuses)
  SlabRing ring_;
  SlabLayout layout_;
};

}  // namespace

void bind_runtime(py::module_& m) {
  m.attr("ATOMICS_LOCK_FREE") = std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free;
  m.def("now_ns", &now_ns, "CLOCK_MONOTONIC (steady_clock) in ns: the runtime's arrival / release clock.");

  py::class_<PyRing>(m, "SlabRing",
                     "Lock-free SPSC ring of packet slabs in caller-provided (shared) memory.\n"
                     "Stages: the dispatcher fills a slab and commits it, the worker processes it in place and marks\n"
                     "it done, the dispatcher releases it (in order). See cpp/include/vnfkit/runtime/ring.hpp.")
      .def(py::init<const py::buffer&, bool, std::uint32_t, std::uint64_t, std::uint32_t>(), py::arg("mem"),
           py::kw_only(), py::arg("create"), py::arg("slots") = 8, py::arg("slab_bytes") = 1 << 20,
           py::arg("max_packets") = 1024,
           "create=True lays out a new ring in `mem` (slots, slab_bytes); create=False attaches to one\n"
           "(slots and slab_bytes come from the memory). max_packets: packets per slab.")
      .def_static("required_bytes", [](std::uint32_t slots, std::uint64_t slab_bytes) {
        return SlabRing::required_bytes(RingConfig{slots, slab_bytes});
      }, py::arg("slots"), py::arg("slab_bytes"))
      .def_property_readonly("slots", [](PyRing& r) { return r.ring().config().slots; })
      .def_property_readonly("slab_bytes", [](PyRing& r) { return r.ring().config().slab_bytes; })
      .def_property_readonly("max_packets", [](PyRing& r) { return r.layout().max_packets(); })
      .def_property_readonly("data_capacity", [](PyRing& r) { return r.layout().data_capacity(); })
      .def_property_readonly("in_flight", [](PyRing& r) { return r.ring().in_flight(); })
      // ---- dispatcher side
      .def("can_fill", [](PyRing& r) { return r.ring().can_fill(); }, "Whether a free slab is open for filling.")
      .def_property_readonly("open_packets", [](PyRing& r) -> std::uint32_t {
        if (!r.ring().can_fill()) return 0;
        return SlabLayout::header(r.ring().slab(r.ring().fill_cursor())).packets;
      }, "Packets in the open (not yet committed) slab.")
      .def_property_readonly("open_since_ns", [](PyRing& r) -> std::uint64_t {
        if (!r.ring().can_fill()) return 0;
        const auto& h = SlabLayout::header(r.ring().slab(r.ring().fill_cursor()));
        return h.packets ? h.opened_ns : 0;
      }, "Arrival time (now_ns clock) of the open slab's oldest packet; 0 if it is empty.")
      .def("append", [](PyRing& r, const PacketBatch& b, const py::array& indices, std::size_t start, std::size_t stop,
                        std::uint64_t arrival_ns, const py::object& arrival) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        vnfkit::bridge::require_1d<std::uint32_t>(indices, "indices");
        const auto n = static_cast<std::size_t>(indices.size());
        if (stop > n || start > stop) throw py::value_error("start, stop: need 0 <= start <= stop <= len(indices)");
        const std::uint64_t* arr = nullptr;
        if (!arrival.is_none()) {
          auto a = arrival.cast<py::array>();
          vnfkit::bridge::require_1d<std::uint64_t>(a, "arrival");
          if (static_cast<std::size_t>(a.size()) != b.size()) throw py::value_error("arrival: needs one entry per packet of batch");
          arr = static_cast<const std::uint64_t*>(a.data());
        }
        const auto* ip = static_cast<const std::uint32_t*>(indices.data());
        for (std::size_t k = start; k < stop; ++k) {
          if (ip[k] >= b.size()) throw py::index_error("indices: entry " + std::to_string(k) + " out of range");
        }
        if (!r.ring().can_fill()) return std::size_t{0};
        py::gil_scoped_release nogil;
        return r.layout().append(r.ring().slab(r.ring().fill_cursor()), b, ip + start, stop - start, arrival_ns, arr);
      }, py::arg("batch"), py::arg("indices").noconvert(), py::arg("start"), py::arg("stop"), py::arg("arrival_ns") = 0,
         py::arg("arrival") = py::none(),
         "Append batch[indices[start:stop]] (all columns) to the open slab, as many as fit; returns how many.\n"
         "Arrival time: arrival[i] (uint64 per packet of batch) if given, else arrival_ns. 0 if no slab is free.")
      .def("commit", [](PyRing& r) {
        if (!r.ring().can_fill()) throw py::value_error("SlabRing.commit: no open slab");
        r.ring().commit_fill();
        if (r.ring().can_fill()) r.layout().reset(r.ring().slab(r.ring().fill_cursor()));
      }, "Hand the open slab to the worker (wakes it if it sleeps) and open the next one.")
      .def_property_readonly("outputs_ready", [](PyRing& r) { return r.ring().outputs_ready(); })
      .def("output", [](py::object self, bool copy) {
        auto& r = self.cast<PyRing&>();
        if (r.ring().outputs_ready() == 0) throw py::value_error("SlabRing.output: no output ready");
        std::byte* s = r.ring().slab(r.ring().release_cursor());
        return copy ? r.layout().copy(s) : r.layout().wrap(s, PyRing::keep(self));
      }, py::arg("copy") = false,
         "The oldest processed batch: a view of its slab (valid until release()) or, copy=True, an owned copy.")
      .def("output_arrival", [](py::object self) {
        auto& r = self.cast<PyRing&>();
        if (r.ring().outputs_ready() == 0) throw py::value_error("SlabRing.output_arrival: no output ready");
        std::byte* s = r.ring().slab(r.ring().release_cursor());
        const auto n = SlabLayout::header(s).packets;
        py::array_t<std::uint64_t> out(n);
        std::memcpy(out.mutable_data(), r.layout().arrival(s), n * sizeof(std::uint64_t));
        return out;
      }, "Arrival times (now_ns clock) of the oldest output's packets (a copy).")
      .def("release", [](PyRing& r) {
        if (r.ring().outputs_ready() == 0) throw py::value_error("SlabRing.release: no output ready");
        const bool was_full = !r.ring().can_fill();
        r.ring().commit_release();
        if (was_full) r.layout().reset(r.ring().slab(r.ring().fill_cursor()));
      }, "Free the oldest output's slab.")
      .def("wait_output", [](PyRing& r, double timeout_s) {
        const auto t = timeout_ns(timeout_s);
        py::gil_scoped_release nogil;
        return r.ring().wait_output(t);
      }, py::arg("timeout_s"), "Spin briefly, then sleep until an output is ready or the timeout passes.")
      // ---- worker side
      .def("wait_input", [](PyRing& r, double timeout_s) {
        const auto t = timeout_ns(timeout_s);
        py::gil_scoped_release nogil;
        return r.ring().wait_input(t);
      }, py::arg("timeout_s"), "Spin briefly, then sleep until a slab is ready, a stop is requested or the timeout passes.")
      .def_property_readonly("input_ready", [](PyRing& r) { return r.ring().input_ready(); })
      .def("input", [](py::object self) {
        auto& r = self.cast<PyRing&>();
        if (!r.ring().input_ready()) throw py::value_error("SlabRing.input: no input ready");
        return r.layout().wrap(r.ring().slab(r.ring().work_cursor()), PyRing::keep(self));
      }, "The next slab to process, as a PacketBatch over the slab's memory (no copy).")
      .def("complete", [](PyRing& r, const PacketBatch& b) {
        auto in_use = vnfkit::bridge::batch_read(&b);
        if (!r.ring().input_ready()) throw py::value_error("SlabRing.complete: no input in progress");
        std::byte* s = r.ring().slab(r.ring().work_cursor());
        if (b.size() != SlabLayout::header(s).packets) {
          throw py::value_error("batch: process() changed the packet count (" + std::to_string(SlabLayout::header(s).packets) +
                                " -> " + std::to_string(b.size()) + "); a VNF decides ports, it does not add or remove packets");
        }
        if (!r.layout().store(s, b)) {
          throw py::value_error("batch: grew beyond its slab (" + std::to_string(b.data.size()) + " bytes of data, capacity " +
                                std::to_string(r.layout().data_capacity()) + "); raise the runtime's slab_bytes");
        }
        r.ring().commit_done();
      }, py::arg("batch"), "Write back what process() reallocated, then hand the slab back (wakes the dispatcher).")
      .def("notify_worker", [](PyRing& r) { r.ring().notify_worker(); }, "Wake the worker if it sleeps.")
      .def("request_stop", [](PyRing& r) { r.ring().request_stop(); })
      .def_property_readonly("stopped", [](PyRing& r) { return r.ring().stopped(); })
      .def_property("user_word", [](PyRing& r) { return r.ring().user_word().load(std::memory_order_acquire); },
                    [](PyRing& r, std::uint64_t v) { r.ring().user_word().store(v, std::memory_order_release); },
                    "A 64-bit word shared by both sides (the runtime keeps the control-state version in it).");
}
