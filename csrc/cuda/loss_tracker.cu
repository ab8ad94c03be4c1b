// The device loss tracker: step/loss_track.hpp's state in device memory, updated by a one-thread kernel
// per appended loss, read back asynchronously through pinned memory and an event.
#include <cstring>

#include "launch.hpp"
#include "pylrcore/step/float_bits.hpp"
#include "pylrcore/step/loss_track.hpp"
#include "runtime.hpp"

namespace pylrcore::cuda {
namespace {

__global__ void append_kernel(LossTrackConfig config, LossTrackState* state, const void* loss, DType dtype,
                              double* losses, double* smoothed, std::int64_t capacity) {
  LossTrackState s = *state;
  track_loss(config, s, float_bits::widen_at(loss, dtype), losses, smoothed, capacity);
  *state = s;
}

}  // namespace

struct LossTracker::Impl {
  int device = 0;
  LossTrackConfig config;
  std::int64_t capacity = 0;
  void* memory = nullptr;  // LossTrackState, then 2 x capacity doubles
  LossTrackState* state = nullptr;
  double* losses = nullptr;
  double* smoothed = nullptr;
  LossTrackState* pinned = nullptr;
  cudaEvent_t arrived = nullptr;
  bool requested = false;

  void release() noexcept {
    // cudaFree first: it waits for the device, so no snapshot copy still writes the pinned buffer.
    if (memory) cudaFree(memory), memory = nullptr;
    if (arrived) cudaEventDestroy(arrived), arrived = nullptr;
    if (pinned) cudaFreeHost(pinned), pinned = nullptr;
  }
};

LossTracker::LossTracker(int device, const LossTrackConfig& config, std::int64_t capacity, StreamHandle stream)
    : impl_(std::make_unique<Impl>()) {
  validate(config);
  if (capacity < 1) fail("capacity must be >= 1, got " + std::to_string(capacity));
  Impl& t = *impl_;
  t.device = device;
  t.config = config;
  t.capacity = capacity;
  allocate(t, [&] {
    const std::size_t state_bytes = (sizeof(LossTrackState) + 15) / 16 * 16;
    throw_if_failed(cudaMalloc(&t.memory, state_bytes + 2 * 8 * static_cast<std::size_t>(capacity)),
                    "cudaMalloc (loss tracker)");
    t.state = static_cast<LossTrackState*>(t.memory);
    t.losses = reinterpret_cast<double*>(static_cast<unsigned char*>(t.memory) + state_bytes);
    t.smoothed = t.losses + capacity;
    throw_if_failed(cudaMallocHost(&t.pinned, sizeof(LossTrackState)), "cudaMallocHost (loss tracker)");
    throw_if_failed(cudaEventCreateWithFlags(&t.arrived, cudaEventDisableTiming), "cudaEventCreate");
    reset(stream);
  });
}

LossTracker::~LossTracker() { release_on_device(impl_.get()); }

void LossTracker::append(std::uintptr_t loss, DType dtype, StreamHandle stream) {
  dtype_from_code(static_cast<int>(dtype), "loss");
  if (loss == 0) fail("loss: null device address");
  if (loss % dtype_size(dtype) != 0) fail("loss: address not aligned to its dtype");
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  append_kernel<<<1, 1, 0, as_stream(stream)>>>(t.config, t.state, reinterpret_cast<const void*>(loss), dtype,
                                                t.losses, t.smoothed, t.capacity);
  throw_if_launch_failed("append_kernel");
}

void LossTracker::reset(StreamHandle stream) {
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  store_on_device(t.state, fresh_loss_track_state(), stream, "reset");
}

void LossTracker::request_snapshot(StreamHandle stream) {
  // A copy still in flight into the same pinned buffer is fine: copies run in stream order, and
  // poll() reads the buffer only once the latest one (this one) has landed.
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  throw_if_failed(cudaMemcpyAsync(t.pinned, t.state, sizeof(LossTrackState), cudaMemcpyDeviceToHost, as_stream(stream)),
                  "cudaMemcpyAsync (snapshot)");
  throw_if_failed(cudaEventRecord(t.arrived, as_stream(stream)), "cudaEventRecord (snapshot)");
  t.requested = true;
}

bool LossTracker::poll(LossTrackState& out) {
  Impl& t = *impl_;
  if (!t.requested) return false;
  const cudaError_t err = cudaEventQuery(t.arrived);
  if (err == cudaErrorNotReady) return false;
  throw_if_failed(err, "cudaEventQuery (snapshot)");
  std::memcpy(&out, t.pinned, sizeof out);
  return true;
}

LossTrackState LossTracker::state(StreamHandle stream) {
  request_snapshot(stream);
  throw_if_failed(cudaEventSynchronize(impl_->arrived), "cudaEventSynchronize (state)");
  LossTrackState out;
  std::memcpy(&out, impl_->pinned, sizeof out);
  return out;
}

void LossTracker::history(std::vector<double>& losses, std::vector<double>& smoothed, StreamHandle stream) {
  const LossTrackState s = state(stream);
  Impl& t = *impl_;
  const auto n = static_cast<std::size_t>(s.steps < t.capacity ? s.steps : t.capacity);
  losses.assign(n, 0.0);
  smoothed.assign(n, 0.0);
  if (n == 0) return;
  DeviceScope scope(t.device);
  // The stream is idle up to the snapshot above; these copies queue behind it and wait.
  throw_if_failed(cudaMemcpyAsync(losses.data(), t.losses, 8 * n, cudaMemcpyDeviceToHost, as_stream(stream)),
                  "cudaMemcpyAsync (history)");
  throw_if_failed(cudaMemcpyAsync(smoothed.data(), t.smoothed, 8 * n, cudaMemcpyDeviceToHost, as_stream(stream)),
                  "cudaMemcpyAsync (history)");
  throw_if_failed(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize (history)");
}

const LossTrackConfig& LossTracker::config() const { return impl_->config; }
std::int64_t LossTracker::capacity() const { return impl_->capacity; }
int LossTracker::device() const { return impl_->device; }

}  // namespace pylrcore::cuda
