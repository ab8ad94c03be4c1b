// Bindings of the optional CUDA extension. Host compiler only: sees launch.hpp, never CUDA headers.
#include <pybind11/pybind11.h>

#include "launch.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pylrcore CUDA kernels (optional; import pylrcore.cuda instead)";
  m.def("device_count", &pylrcore::cuda::device_count,
        "Number of usable CUDA devices (0 without driver or device).");
  m.def("runtime_version", &pylrcore::cuda::runtime_version);
  m.def("unavailable_reason", &pylrcore::cuda::unavailable_reason);
}
