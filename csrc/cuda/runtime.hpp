// Small helpers for the .cu files (never seen by the bindings): CUDA errors become
// std::runtime_error (Python RuntimeError), and a scope that makes a device current.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace pylrcore::cuda {

inline void throw_if_failed(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  throw std::runtime_error(std::string("pylrcore CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// Every launch is followed by this: a bad configuration is reported here, not at the next sync.
inline void throw_if_launch_failed(const char* kernel) { throw_if_failed(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// Makes `device` current for the scope (memory and launches belong to it), then restores the
// caller's device: torch keeps its own notion of the current device.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    throw_if_failed(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) throw_if_failed(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

// Stores `value` at `dst` (device memory) in stream order. A kernel rather than a copy from the host:
// nothing on the host must outlive the call.
template <class T>
__global__ void store_kernel(T* dst, T value) { *dst = value; }

template <class T>
void store_on_device(T* dst, const T& value, std::uintptr_t stream, const char* what) {
  store_kernel<<<1, 1, 0, as_stream(stream)>>>(dst, value);
  throw_if_launch_failed(what);
}

// The device-side objects (DeviceGuard, LossTracker) keep their buffers in an Impl with `device` and
// a noexcept `release()`. allocate() runs `fill` and releases what it got if it throws; the
// destructor's release_on_device frees with the device current, or without it if that fails
// (a destructor must not throw).
template <class Impl, class Fill>
void allocate(Impl& impl, Fill&& fill) {
  DeviceScope scope(impl.device);
  try {
    fill();
  } catch (...) {
    impl.release();
    throw;
  }
}

template <class Impl>
void release_on_device(Impl* impl) noexcept {
  if (!impl) return;
  try {
    DeviceScope scope(impl->device);
    impl->release();
  } catch (...) {
    impl->release();
  }
}

}  // namespace pylrcore::cuda
