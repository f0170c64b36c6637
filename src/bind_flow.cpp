#include "pybind.hpp"

void bind_flow(py::module_& m) { (void)m; }
