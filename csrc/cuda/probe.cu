#include "launch.hpp"

#include <cuda_runtime.h>

namespace pylrcore::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later probes start clean
    return 0;
  }
  return n;
}

int runtime_version() noexcept {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

std::string unavailable_reason() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return n > 0 ? std::string() : std::string("no CUDA device found");
}

}  // namespace pylrcore::cuda
