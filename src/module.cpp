#include "pybind.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "vnfkit native engine (private: use the vnfkit package)";
  bind_packet(m);
  bind_classify(m);
  bind_flow(m);
  bind_state(m);
  bind_nfs(m);
  bind_snapshot(m);
}
