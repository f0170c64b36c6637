// The single include point for pybind11 in vnfkit (keeps casters and options identical in every
// translation unit of the bridge, avoiding ODR surprises).
#pragma once

#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace py = pybind11;

namespace vnfkit::bridge {

// The numpy dtype of vnfkit::flow::FlowKey (40 bytes). Mirrors flow_key.hpp.
py::dtype flow_key_dtype();

// A 1-D numpy view of `n` elements at `ptr`, kept alive by `owner` (no copy).
template <typename T>
py::array_t<T> view1d(T* ptr, std::size_t n, py::handle owner) {
  return py::array_t<T>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(T))}, ptr, owner);
}

// Require a C-contiguous 1-D array of exactly dtype T; raise TypeError naming `what` otherwise.
// Use together with py::arg(...).noconvert() so pybind11 never silently copies.
template <typename T>
void require_1d(const py::array& a, const char* what) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(what) + ": expected a numpy array of dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  if (a.ndim() != 1) throw py::type_error(std::string(what) + ": expected a 1-D array");
  if (!(a.flags() & py::array::c_style)) {
    throw py::type_error(std::string(what) + ": array must be C-contiguous (got a strided view)");
  }
}

}  // namespace vnfkit::bridge

// One registration function per engine area (src/bind_<area>.cpp).
void bind_packet(py::module_& m);
void bind_classify(py::module_& m);
void bind_flow(py::module_& m);
void bind_state(py::module_& m);
void bind_nfs(py::module_& m);
void bind_runtime(py::module_& m);
void bind_snapshot(py::module_& m);
void bind_live(py::module_& m);
