#include "pybind.hpp"

void bind_nfs(py::module_& m) { (void)m; }
