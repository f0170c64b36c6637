// Bridge for the runtime's shared-memory rings (vnfkit::runtime::SlabRing + SlabLayout).
//
// A Python SlabRing is built over a writable buffer the caller owns (an mmap of a /dev/shm file made
// by vnfkit.runtime); it holds that buffer exported for as long as the ring or any batch wrapping one
// of its slabs lives, so the mapping cannot be closed under them. Waits release the GIL.
#include <chrono>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "pybind.hpp"
#include "use_guard.hpp"
#include "vnfkit/ftlog/log.hpp"
#include "vnfkit/ftlog/stream_commit.hpp"
#include "vnfkit/runtime/dispatcher.hpp"
#include "vnfkit/runtime/lifeline.hpp"
#include "vnfkit/runtime/ring.hpp"
#include "vnfkit/runtime/slab.hpp"
#include "vnfkit/state/shared_state.hpp"

using vnfkit::packet::PacketBatch;
using vnfkit::runtime::Dispatcher;
using vnfkit::runtime::DispatcherConfig;
using vnfkit::runtime::RingConfig;
using vnfkit::runtime::SlabLayout;
using vnfkit::runtime::SlabRing;

namespace {

std::uint64_t now_ns() { return vnfkit::runtime::steady_now_ns(); }

std::uint64_t timeout_ns(double seconds, const char* field = "timeout") {
  if (!(seconds >= 0) || seconds > 3600) throw py::value_error(std::string(field) + ": must be in [0, 3600] seconds");
  return static_cast<std::uint64_t>(seconds * 1e9);
}

std::uint64_t deadline_in(double seconds) { return now_ns() + timeout_ns(seconds); }

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

// The bridge's Dispatcher: keeps the rings, the classifier and the batch in progress alive.
class PyDispatcher {
 public:
  PyDispatcher(const py::list& rings, const py::object& classifier, const DispatcherConfig& cfg)
      : rings_(py::tuple(rings)),  // a copy: the caller may empty its list
        classifier_(classifier),
        d_(lanes(rings), classifier.cast<const vnfkit::classify::MultiQueueClassifier&>(), cfg) {}

  Dispatcher& d() { return d_; }

  bool dispatch(const py::object& batch, std::uint64_t arrival_ns, double timeout_s) {
    auto& b = as_batch(batch, "batch");
    const auto deadline = deadline_in(timeout_s);
    check_idle();
    bool done;
    {
      auto in_use = vnfkit::bridge::batch_write(&b);
      py::gil_scoped_release nogil;
      done = wrap_errors([&] { return d_.dispatch(b, arrival_ns, deadline); });
    }
    cur_ = done ? py::none() : batch;
    return done;
  }
  void begin_paced(const py::object& trace, std::uint64_t start_in_ns, double period_ns, std::size_t chunk) {
    auto& b = as_batch(trace, "trace");
    check_idle();
    {
      auto in_use = vnfkit::bridge::batch_write(&b);
      py::gil_scoped_release nogil;
      wrap_errors([&] {
        d_.begin_paced(b, start_in_ns, period_ns, chunk);
        return true;
      });
    }
    cur_ = trace;
  }
  // resume() / pace() / drain(): continue with the batch in progress, if any.
  template <typename F>
  bool step(double timeout_s, F&& f) {
    const auto deadline = deadline_in(timeout_s);
    if (cur_.is_none()) {
      py::gil_scoped_release nogil;
      return f(deadline);
    }
    bool done;
    {
      auto in_use = vnfkit::bridge::batch_write(&cur_.cast<PacketBatch&>());
      py::gil_scoped_release nogil;
      done = f(deadline);
    }
    if (!d_.busy()) cur_ = py::none();
    return done;
  }
  py::list take_outputs() {
    py::list out;
    for (auto& [q, b] : d_.outbox()) out.append(py::make_tuple(q, py::cast(std::move(b))));
    d_.outbox().clear();
    return out;
  }

 private:
  static PacketBatch& as_batch(const py::object& o, const char* what) {
    if (!py::isinstance<PacketBatch>(o)) throw py::type_error(std::string(what) + ": must be a PacketBatch");
    return o.cast<PacketBatch&>();
  }
  static std::vector<vnfkit::runtime::Lane> lanes(const py::list& rings) {
    std::vector<vnfkit::runtime::Lane> out;
    for (const auto& r : rings) {
      auto& pr = r.cast<PyRing&>();
      out.push_back({&pr.ring(), &pr.layout()});
    }
    return out;
  }
  template <typename F>
  static bool wrap_errors(F&& f) {
    try {
      return f();
    } catch (const std::invalid_argument& e) {
      py::gil_scoped_acquire gil;
      throw py::value_error(e.what());
    }
  }
  void check_idle() const {
    if (d_.busy()) throw py::value_error("Dispatcher: a batch is still being dispatched; call resume() / pace() until it returns True");
  }

  py::tuple rings_;
  py::object classifier_;
  Dispatcher d_;
  py::object cur_ = py::none();
};


// The streaming master's per-batch checkpoint + replay bookkeeping (ftlog::StreamCommit) over its
// boundary board (a shared-memory array of 8-byte words the workers write: per worker a line of
// `line_words` words, the slab counter at word `count_word`, then `rows` rows of one log position
// per worker from word `head_words`; row k % rows is written once slab k is done). It holds the
// output slabs that wait for output commit. Every call keeps the GIL: one master thread uses it.
class PyStreamCommit {
 public:
  PyStreamCommit(std::size_t workers, const py::buffer& board, std::size_t line_words, std::size_t head_words,
                 std::size_t rows, std::size_t count_word)
      : sc_(workers), board_obj_(board), info_(board.request(true)), line_(line_words), head_(head_words),
        rows_(rows), count_(count_word), taken_(workers, 0), batches_(workers) {
    if (info_.ndim != 1 || info_.itemsize != 8 || info_.strides[0] != 8) {
      throw py::type_error("board: expected a writable contiguous 1-D buffer of 8-byte words");
    }
    if (rows == 0 || count_word >= head_words || head_words + rows * workers > line_words) {
      throw py::value_error("board: a line of " + std::to_string(line_words) + " words cannot hold " +
                            std::to_string(head_words) + " head words and " + std::to_string(rows) + " rows of " +
                            std::to_string(workers) + " positions (count word " + std::to_string(count_word) + ")");
    }
    if (static_cast<std::size_t>(info_.shape[0]) < line_words * workers) {
      throw py::value_error("board: " + std::to_string(info_.shape[0]) + " words, " + std::to_string(workers) +
                            " lines of " + std::to_string(line_words) + " need " + std::to_string(line_words * workers));
    }
  }

  void dispatched(std::uint64_t seq, std::uint64_t first_id, std::uint64_t packets, const py::object& counts) {
    const std::size_t w = sc_.workers();
    if (py::isinstance<PyDispatcher>(counts)) {
      auto& d = counts.cast<PyDispatcher&>().d();
      if (d.num_queues() != w) {
        throw py::value_error("counts: the dispatcher has " + std::to_string(d.num_queues()) + " queues, expected " +
                              std::to_string(w));
      }
      counts_.resize(w);
      for (std::size_t q = 0; q < w; ++q) counts_[q] = static_cast<std::uint32_t>(d.queue_count(q));
    } else {
      counts_ = counts.cast<std::vector<std::uint32_t>>();
    }
    sc_.dispatched(seq, first_id, packets, counts_, now_ns());
  }

  void take(const py::list& outs, std::uint32_t linktype) {
    const std::size_t w = sc_.workers();
    const auto* words = static_cast<const std::uint64_t*>(info_.ptr);
    const std::uint64_t now = now_ns();
    for (const auto& item : outs) {
      if (!py::isinstance<py::tuple>(item) || py::len(item) != 2 || !py::isinstance<py::int_>(item[py::int_(0)]) ||
          !py::isinstance<PacketBatch>(item[py::int_(1)])) {
        throw py::type_error("outs: each item must be a (queue, PacketBatch) pair, as take_outputs() gives");
      }
      auto pair = py::reinterpret_borrow<py::tuple>(item);
      const auto qi = pair[0].cast<long long>();
      if (qi < 0 || static_cast<unsigned long long>(qi) >= w) {
        throw py::value_error("outs: queue " + std::to_string(qi) + " is not in [0, " + std::to_string(w) + ")");
      }
      const auto q = static_cast<std::size_t>(qi);
      py::object obj = pair[1];
      auto& b = obj.cast<PacketBatch&>();
      const std::uint64_t k = taken_[q];
      const std::uint64_t* line = words + q * line_;
      // the slab counter is written after the row (x86 keeps stores in order)
      if (__atomic_load_n(&line[count_], __ATOMIC_ACQUIRE) <= k) {
        throw py::value_error("board: worker " + std::to_string(q) + " has not recorded slab " + std::to_string(k));
      }
      const std::uint64_t* row = line + head_ + static_cast<std::size_t>(k % rows_) * w;
      const std::size_t n = b.size();
      b.linktype = linktype;
      try {
        sc_.returned(q, {row, w}, n, n ? b.packet_id[0] : 0, n ? b.packet_id[n - 1] : 0, now);
      } catch (const std::out_of_range& e) {
        throw py::value_error(e.what());
      } catch (const std::logic_error& e) {
        throw py::value_error(std::string("outs: ") + e.what());
      }
      taken_[q] = k + 1;
      batches_[q].push_back(std::move(obj));
    }
  }

  py::list cut_records(const vnfkit::state::SharedState& s) {
    py::list out;
    std::uint64_t seq = 0;
    std::vector<std::vector<std::uint8_t>> chunks(sc_.workers());
    while (true) {
      // the positions are checked against the logs before the record is cut
      if (!sc_.peek_record(seq, from_, to_)) break;
      for (std::size_t q = 0; q < chunks.size(); ++q) {
        chunks[q].clear();
        if (to_[q] != from_[q]) {
          try {
            chunks[q] = s.chunk_range(static_cast<std::uint16_t>(q), from_[q], to_[q]);
          } catch (const std::invalid_argument& e) {
            throw py::value_error("shared: input " + std::to_string(seq) + ": worker " + std::to_string(q) + "'s determinants [" +
                                     std::to_string(from_[q]) + ", " + std::to_string(to_[q]) + ") not in its log (" +
                                     e.what() + ")");
          }
        }
      }
      sc_.cut_record(seq, from_, to_);
      const auto rec = vnfkit::ftlog::encode_det_record(seq, chunks);
      out.append(py::make_tuple(seq, py::bytes(reinterpret_cast<const char*>(rec.data()), rec.size())));
    }
    return out;
  }

  py::list release() {
    py::list out;
    for (std::size_t q = 0; q < sc_.workers(); ++q) {
      seqs_.clear();
      const std::size_t n = sc_.release(q, seqs_);
      for (std::size_t i = 0; i < n; ++i) {
        out.append(py::make_tuple(q, std::move(batches_[q].front()), seqs_[i]));
        batches_[q].pop_front();
      }
    }
    return out;
  }

  vnfkit::ftlog::StreamCommit& sc() { return sc_; }
  std::size_t check_queue(std::size_t q) const {
    if (q >= sc_.workers()) throw py::value_error("queue: " + std::to_string(q) + " is not below " + std::to_string(sc_.workers()));
    return q;
  }

 private:
  vnfkit::ftlog::StreamCommit sc_;
  py::buffer board_obj_;  // keeps the board's buffer exported while this lives
  py::buffer_info info_;
  std::size_t line_, head_, rows_, count_;
  std::vector<std::uint64_t> taken_;
  std::vector<std::deque<py::object>> batches_;  // per queue, in the order StreamCommit holds them
  std::vector<std::uint32_t> counts_;
  std::vector<std::uint64_t> from_, to_, seqs_;
};

py::dict counters_dict(const vnfkit::runtime::QueueCounters& c) {
  auto u64 = [](const std::uint64_t* p, std::size_t n) {
    py::array_t<std::uint64_t> a(static_cast<py::ssize_t>(n));
    std::memcpy(a.mutable_data(), p, n * sizeof(std::uint64_t));
    return a;
  };
  const auto& h = c.latency;
  py::dict d;
  d["packets"] = c.packets;
  d["forwarded"] = c.forwarded;
  d["slabs"] = c.slabs;
  d["drops"] = u64(c.drops.data(), c.drops.size());
  d["latency_counts"] = u64(h.counts().data(), h.counts().size());
  d["latency_total"] = h.total();
  d["latency_overflow"] = h.overflow();
  d["latency_min"] = h.min();
  d["latency_max"] = h.max();
  d["latency_highest_value"] = h.highest_value();
  d["latency_significant_digits"] = h.significant_digits();
  return d;
}

// LifeLines over a writable buffer the caller owns (a /dev/shm mapping), kept exported while alive.
class PyLifeLines {
 public:
  PyLifeLines(const py::buffer& mem, bool create, std::size_t lines) : info_(mem.request(true)), lines_(open(info_, create, lines)) {}
  vnfkit::runtime::LifeLines& lines() { return lines_; }
  std::size_t check(std::size_t i) const {
    if (i >= lines_.size())
      throw py::index_error("line: " + std::to_string(i) + " out of range (" + std::to_string(lines_.size()) + " lines)");
    return i;
  }

 private:
  static vnfkit::runtime::LifeLines open(const py::buffer_info& info, bool create, std::size_t lines) {
    if (info.readonly) throw py::type_error("mem: the buffer must be writable");
    std::span<std::byte> mem(static_cast<std::byte*>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize));
    if (create) return vnfkit::runtime::LifeLines::create(mem, lines);
    if (lines != 0) throw py::value_error("lines: given only with create=True (an attach reads it from the memory)");
    return vnfkit::runtime::LifeLines::attach(mem);
  }
  py::buffer_info info_;
  vnfkit::runtime::LifeLines lines_;
};

[[noreturn]] void raise_os_error(const std::system_error& e) {
  PyErr_SetString(PyExc_OSError, e.what());
  throw py::error_already_set();
}

class PyDeathWatch {
 public:
  explicit PyDeathWatch(const py::object& lines) : owner_(lines), watch_(of(lines)) {}
  vnfkit::runtime::DeathWatch& w() { return watch_; }
  const py::object& owner() const { return owner_; }
  bool closed = false;

 private:
  static vnfkit::runtime::LifeLines of(const py::object& lines) {
    if (!py::isinstance<PyLifeLines>(lines)) throw py::type_error("lines: must be a LifeLines");
    return lines.cast<PyLifeLines&>().lines();
  }
  py::object owner_;  // keeps the lines' memory mapped while the threads look at it
  vnfkit::runtime::DeathWatch watch_;
};

const char* state_name(vnfkit::runtime::LifeLines::State s) {
  using S = vnfkit::runtime::LifeLines::State;
  switch (s) {
    case S::kHeld: return "held";
    case S::kLetGo: return "let_go";
    case S::kDead: return "dead";
    default: return "unheld";
  }
}

}  // namespace

void bind_runtime(py::module_& m) {
  m.attr("ATOMICS_LOCK_FREE") = std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free;
  m.def("now_ns", &now_ns, "CLOCK_MONOTONIC (steady_clock) in ns: the runtime's arrival / release clock.");
  m.def("retain_heap", []() -> bool {
#if defined(__GLIBC__)
    // Allocations under 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap, and
    // the heap's top is given back only past 256 MiB: a checkpoint's multi-megabyte buffers then
    // reuse pages already mapped instead of faulting in fresh zeroed ones every time.
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
#else
    return false;
#endif
  }, "Keep this process's freed large blocks for reuse (glibc's malloc); False where that is not possible.");

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
      .def("wait_output", [](PyRing& r, double timeout_s, double spin_s) {
        const auto t = timeout_ns(timeout_s);
        const auto spin = timeout_ns(spin_s, "spin_s");
        py::gil_scoped_release nogil;
        return r.ring().wait_output(t, spin);
      }, py::arg("timeout_s"), py::arg("spin_s") = 200e-6,
      "Poll for up to spin_s, then sleep until an output is ready or the timeout passes.")
      // ---- worker side
      .def("wait_input", [](PyRing& r, double timeout_s, double spin_s) {
        const auto t = timeout_ns(timeout_s);
        const auto spin = timeout_ns(spin_s, "spin_s");
        py::gil_scoped_release nogil;
        return r.ring().wait_input(t, spin);
      }, py::arg("timeout_s"), py::arg("spin_s") = 200e-6,
      "Poll for up to spin_s, then sleep until a slab is ready, a stop is requested or the timeout passes.")
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
  py::class_<PyDispatcher>(m, "Dispatcher",
                           "The process backend's dispatcher, natively: per input batch one call that assigns ids, parses,\n"
                           "classifies by RSS and appends each queue's packets into its ring's open slab (committing full\n"
                           "slabs and slabs whose oldest packet waited flush_us); it releases outputs in order per queue and\n"
                           "counts them natively (packets, forwarded, drops by reason code, latency arrival -> release).\n"
                           "Calls release the GIL and return False at their timeout if not finished (call again).\n"
                           "See cpp/include/vnfkit/runtime/dispatcher.hpp.")
      .def(py::init([](const py::list& rings, const py::object& classifier, std::uint32_t batch_size, double flush_us,
                       bool parse, bool assign_ids, double spin_us, bool hold_while_busy) {
        if (!(flush_us >= 0) || flush_us > 1e7) throw py::value_error("flush_us: must be in [0, 1e7]");
        if (!(spin_us >= 0) || spin_us > 1e7) throw py::value_error("spin_us: must be in [0, 1e7]");
        for (const auto& r : rings) {
          if (!py::isinstance<PyRing>(r)) throw py::type_error("rings: every entry must be a SlabRing");
        }
        if (!py::isinstance<vnfkit::classify::MultiQueueClassifier>(classifier)) {
          throw py::type_error("classifier: must be a MultiQueueClassifier");
        }
        DispatcherConfig cfg{batch_size, static_cast<std::uint64_t>(flush_us * 1000.0), parse, assign_ids,
                             static_cast<std::uint64_t>(spin_us * 1000.0), hold_while_busy};
        try {
          return std::make_unique<PyDispatcher>(rings, classifier, cfg);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      }), py::arg("rings"), py::arg("classifier"), py::kw_only(), py::arg("batch_size"), py::arg("flush_us"),
         py::arg("parse") = true, py::arg("assign_ids") = true, py::arg("spin_us") = 200.0,
         py::arg("hold_while_busy") = true)
      .def_property("next_id", [](PyDispatcher& d) { return d.d().next_id(); },
                    [](PyDispatcher& d, std::uint64_t v) { d.d().set_next_id(v); }, "The next runner-wide packet id.")
      .def_property_readonly("busy", [](PyDispatcher& d) { return d.d().busy(); }, "A batch is still being dispatched.")
      .def("queue_counts", [](PyDispatcher& d) {
        py::list out(d.d().num_queues());
        for (std::size_t q = 0; q < d.d().num_queues(); ++q) out[q] = d.d().queue_count(q);
        return out;
      }, "Packets per queue of the batch taken last (by dispatch or begin_paced), as a list.")
      .def("set_collect", [](PyDispatcher& d, bool on) { d.d().set_collect(on); }, py::arg("on"),
           "Copy every released output into the outbox (take_outputs) as well as counting it.")
      .def("dispatch", &PyDispatcher::dispatch, py::arg("batch"), py::arg("arrival_ns"), py::arg("timeout_s"),
           "Take `batch` (arrived at arrival_ns): ids, parse, classify, append into slabs, release ready\n"
           "outputs, flush due slabs. True when the batch is all in slabs; False at the timeout (call resume()).")
      .def("resume", [](PyDispatcher& d, double timeout_s) {
        return d.step(timeout_s, [&](std::uint64_t dl) { return d.d().resume(dl); });
      }, py::arg("timeout_s"), "Continue the batch in progress (as dispatch).")
      .def("begin_paced", &PyDispatcher::begin_paced, py::arg("trace"), py::arg("start_in_ns"), py::arg("period_ns"),
           py::arg("chunk"), "Open loop: ids, parse and classify `trace` now; then packet i arrives at t0 + i * period_ns,\n"
           "t0 = start_in_ns after that. pace() pushes them.")
      .def("pace", [](PyDispatcher& d, double timeout_s) {
        return d.step(timeout_s, [&](std::uint64_t dl) { return d.d().pace(dl); });
      }, py::arg("timeout_s"), "Push due packets of the paced trace, flush on T, release outputs; True when all are in slabs.")
      .def("drain", [](PyDispatcher& d, double timeout_s) {
        return d.step(timeout_s, [&](std::uint64_t dl) { return d.d().drain(dl); });
      }, py::arg("timeout_s"), "Commit every open slab and release every output; True when nothing is in flight.")
      .def("take_outputs", &PyDispatcher::take_outputs, "The collected outputs as (queue, PacketBatch) pairs (emptied).")
      .def("counters", [](PyDispatcher& d, std::size_t q) {
        if (q >= d.d().num_queues()) throw py::index_error("queue: out of range");
        return counters_dict(d.d().counters(q));
      }, py::arg("queue"), "What was counted for queue `queue` since clear_counters().")
      .def("clear_counters", [](PyDispatcher& d) { d.d().clear_counters(); });

  py::class_<PyStreamCommit>(m, "StreamCommit",
      "The streaming master's checkpoint + replay bookkeeping over its boundary board: which inputs' slabs\n"
      "are in flight, the determinant record of each input once all its slabs are back, and output commit\n"
      "(a slab leaves, in order per queue, once its input's records are acknowledged and every worker's\n"
      "stable log prefix covers the slab's clock). Holds the output slabs that wait.")
      .def(py::init<std::size_t, const py::buffer&, std::size_t, std::size_t, std::size_t, std::size_t>(),
           py::arg("workers"), py::arg("board"), py::arg("line_words"), py::arg("head_words"), py::arg("rows"),
           py::arg("count_word"))
      .def("dispatched", &PyStreamCommit::dispatched, py::arg("seq"), py::arg("first_id"), py::arg("packets"),
           py::arg("counts"),
           "Input `seq` (ids [first_id, first_id + packets)) was dispatched: each queue that got packets of it\n"
           "has one slab of it in flight. `counts`: the Dispatcher that dispatched it (its queue_counts(), read\n"
           "natively) or the packets per queue. Inputs come in order (ValueError otherwise).")
      .def("take", &PyStreamCommit::take, py::arg("outs"), py::arg("linktype"),
           "The dispatcher's take_outputs(): each slab gets `linktype`, its clock from the board, and waits.\n"
           "ValueError if the board lacks its row or the slab is not of the input expected.")
      .def("cut_records", &PyStreamCommit::cut_records, py::arg("shared"),
           "[(seq, determinant record bytes)] of every input, in order, whose slabs are all back (the records\n"
           "to append, in this order, to the determinant stream).")
      .def("acknowledged", [](PyStreamCommit& p, std::uint64_t det, std::uint64_t inp) { p.sc().acknowledged(det, inp); },
           py::arg("det_acked"), py::arg("input_acked"),
           "Storage acknowledged determinant records below det_acked and input records below input_acked.")
      .def("release", &PyStreamCommit::release, "[(queue, batch, seq)] of every slab that may leave now, in order per queue.")
      .def_property_readonly("bound", [](PyStreamCommit& p) { return p.sc().bound(); },
                             "Every worker's log position after the last record cut.")
      .def_property_readonly("stable", [](PyStreamCommit& p) { return p.sc().stable(); },
                             "Every worker's stable log prefix (acknowledged records).")
      .def_property_readonly("next_record", [](PyStreamCommit& p) { return p.sc().next_record(); },
                             "The input whose determinant record is cut next.")
      .def_property_readonly("input_acked", [](PyStreamCommit& p) { return p.sc().input_acked(); },
                             "Inputs below this have their input and determinant records acknowledged.")
      .def("in_flight", [](PyStreamCommit& p, std::size_t q) { return p.sc().in_flight(p.check_queue(q)); },
           py::arg("queue"), "Slabs of `queue` dispatched and not back.")
      .def("busy_since_ns", [](PyStreamCommit& p, std::size_t q) { return p.sc().busy_since_ns(p.check_queue(q)); },
           py::arg("queue"), "When `queue` last got work while idle, or last returned a slab (now_ns clock).")
      .def_property_readonly("held_packets", [](PyStreamCommit& p) { return p.sc().held_packets(); },
                             "Packets back and waiting for output commit.")
      .def("oldest_pending", [](PyStreamCommit& p) -> py::object {
        auto s = p.sc().oldest_pending();
        return s ? py::object(py::int_(*s)) : py::object(py::none());
      }, "The oldest input with a slab in flight or waiting (None: none is).");

  py::class_<PyLifeLines>(m, "LifeLines",
                          "One process-shared robust mutex per worker in caller-provided shared memory: a worker holds\n"
                          "its line while it runs, and the kernel marks the line dead as the worker exits, before it\n"
                          "unmaps the process (long before its pidfd turns readable). See DeathWatch and\n"
                          "cpp/include/vnfkit/runtime/lifeline.hpp.")
      .def(py::init<const py::buffer&, bool, std::size_t>(), py::arg("mem"), py::kw_only(), py::arg("create"),
           py::arg("lines") = 0,
           "create=True lays `lines` new lines out in `mem` (64-byte aligned, required_bytes(lines));\n"
           "create=False attaches to lines another process laid out.")
      .def_static("required_bytes", &vnfkit::runtime::LifeLines::required_bytes, py::arg("lines"))
      .def("__len__", [](PyLifeLines& l) { return l.lines().size(); })
      .def("hold", [](PyLifeLines& l, std::size_t i) {
        l.check(i);
        try {
          py::gil_scoped_release nogil;  // a watcher may have the mutex for a moment
          l.lines().hold(i);
        } catch (const std::system_error& e) {
          raise_os_error(e);
        }
      }, py::arg("line"), "Take `line` for the calling thread until let_go() or its death (a worker, at start).")
      .def("let_go", [](PyLifeLines& l, std::size_t i) {
        l.check(i);
        try {
          l.lines().let_go(i);
        } catch (const std::system_error& e) {
          raise_os_error(e);
        }
      }, py::arg("line"), "A clean exit: give `line` back (its watcher ends without a report). ValueError unless held here.")
      .def("state", [](PyLifeLines& l, std::size_t i) { return state_name(l.lines().state(l.check(i))); },
           py::arg("line"), "'unheld', 'held', 'let_go' or 'dead'.")
      .def("died_ns", [](PyLifeLines& l, std::size_t i) { return l.lines().died_ns(l.check(i)); }, py::arg("line"),
           "When a watcher heard of the holder's death (now_ns clock); 0 if it did not.")
      .def("holder_pid", [](PyLifeLines& l, std::size_t i) { return l.lines().holder_pid(l.check(i)); }, py::arg("line"),
           "The pid that last took `line` (0: never taken).");

  py::class_<PyDeathWatch>(m, "DeathWatch",
                           "One native thread per line of a LifeLines, each waiting (no GIL) on its line: a holder's\n"
                           "death is stamped (died_ns) and bumps an eventfd (fileno(), for poll) the moment the kernel\n"
                           "tells. first_dead() is a lock-free look.")
      .def(py::init<const py::object&>(), py::arg("lines"))
      .def("first_dead", [](PyDeathWatch& d) { return d.w().first_dead(); }, "The lowest dead line, or -1.")
      .def_property_readonly("lines", [](PyDeathWatch& d) { return d.owner(); }, "The LifeLines watched.")
      .def("fileno", [](PyDeathWatch& d) {
        if (d.closed) throw py::value_error("DeathWatch is closed");
        return d.w().event_fd();
      }, "An eventfd, readable once a death was seen.")
      .def("close", [](PyDeathWatch& d) {
        py::gil_scoped_release nogil;
        d.w().stop();
        d.closed = true;
      }, "Stop and join the threads (each within 20 ms); idempotent.");
}
