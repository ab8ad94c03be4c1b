// The boundary between the CUDA kernels and the Python bindings: plain C++ declarations only
// (no CUDA, pybind11 or torch headers), so the bindings compile with the host compiler.
#pragma once
#include <string>

namespace pylrcore::cuda {

// Number of usable CUDA devices; 0 when there is no driver, no device, or the runtime fails.
// Never throws: a machine without a GPU is a normal case, not an error.
int device_count() noexcept;

// CUDA runtime version the module was built against (e.g. 13000), for diagnostics.
int runtime_version() noexcept;

// Human-readable reason when device_count() is 0 ("no CUDA driver", ...), else "".
std::string unavailable_reason();

}  // namespace pylrcore::cuda
