#include "pybind.hpp"

void bind_classify(py::module_& m) { (void)m; }
