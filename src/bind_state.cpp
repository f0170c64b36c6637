#include "pybind.hpp"

void bind_state(py::module_& m) { (void)m; }
