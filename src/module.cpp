#include "pybind.hpp"
#include "use_guard.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "vnfkit native engine (private: use the vnfkit package)";
  bind_packet(m);
  bind_classify(m);
  bind_flow(m);
  bind_state(m);
  bind_nfs(m);
  bind_runtime(m);
  bind_snapshot(m);
  bind_live(m);
  // The process-wide "in use" registry, for the Cython stages (vnfkit._wanopt): they mark the same
  // batches in the same table, so a batch encoded in one thread and parsed in another conflicts.
  m.attr("_use_registry") = py::capsule(&vnfkit::bridge::UseRegistry::instance(), "vnfkit._core.use_registry");
}
