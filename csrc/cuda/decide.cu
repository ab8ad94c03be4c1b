// The guard's decision on the device: guard_step() (step/guard.hpp) in a one-thread kernel that
// reads the loss and the gradient check's result from device memory and writes found_inf, the
// clip coefficient and the decision record, with the guard's state kept in device memory.
#include <cstring>

#include "launch.hpp"
#include "pylrcore/step/float_bits.hpp"
#include "pylrcore/step/guard.hpp"
#include "runtime.hpp"

namespace pylrcore::cuda {
namespace {

__global__ void decide_kernel(GuardConfig config, GuardState* state, DecideInputs in, DecideOutputs out) {
  GuardInput input{};
  input.has_loss = in.loss != 0;
  if (input.has_loss) input.loss = float_bits::widen_at(reinterpret_cast<const void*>(in.loss), in.loss_dtype);
  input.grads_checked = in.check_info != 0;
  if (input.grads_checked) {
    input.grad_nonfinite = reinterpret_cast<const long long*>(in.check_info)[0];
    input.grad_sumsq = *reinterpret_cast<const double*>(in.check_sumsq);
  }
  input.amp_active = in.amp_active;
  GuardState s = *state;
  const GuardDecision d = guard_step(config, s, input);
  *state = s;

  const bool applied = d.action == GuardAction::Record && !(d.events & kAmpOverflow);
  // torch.nn.utils.clip_grad_norm_'s coefficient; 1 when not clipping or when the norm is not
  // finite (that step is not applied anyway).
  double coef = 1.0;
  if (in.max_norm > 0.0 && d.grad_norm - d.grad_norm == 0.0) {
    coef = in.max_norm / (d.grad_norm + 1e-6);
    if (coef > 1.0) coef = 1.0;
  }
  if (out.found_inf) *reinterpret_cast<float*>(out.found_inf) = applied ? 0.0f : 1.0f;
  if (out.clip_coef) *reinterpret_cast<float*>(out.clip_coef) = static_cast<float>(coef);
  if (out.grad_scale) *reinterpret_cast<float*>(out.grad_scale) = static_cast<float>(1.0 / coef);
  if (out.decision) {
    double* r = reinterpret_cast<double*>(out.decision);
    r[0] = static_cast<double>(d.step);
    r[1] = static_cast<double>(d.events);
    r[2] = static_cast<double>(static_cast<std::int32_t>(d.action));
    r[3] = static_cast<double>(d.consecutive_skips);
    r[4] = d.loss_z;
    r[5] = d.smoothed;
    r[6] = d.explode_at;
    r[7] = d.grad_norm;
    r[8] = d.norm_z;
  }
}

}  // namespace

struct DeviceGuard::Impl {
  int device = 0;
  GuardConfig config{};
  GuardState* state = nullptr;
  GuardState* pinned = nullptr;

  void release() noexcept {
    if (state) cudaFree(state), state = nullptr;  // first: it waits for the device
    if (pinned) cudaFreeHost(pinned), pinned = nullptr;
  }
};

DeviceGuard::DeviceGuard(int device, const GuardConfig& config, const GuardState& state, StreamHandle stream)
    : impl_(std::make_unique<Impl>()) {
  Impl& t = *impl_;
  t.device = device;
  t.config = config;
  allocate(t, [&] {
    throw_if_failed(cudaMalloc(&t.state, sizeof(GuardState)), "cudaMalloc (device guard)");
    throw_if_failed(cudaMallocHost(&t.pinned, sizeof(GuardState)), "cudaMallocHost (device guard)");
    set_state(state, stream);
  });
}

DeviceGuard::~DeviceGuard() { release_on_device(impl_.get()); }

void DeviceGuard::decide(const DecideInputs& in, const DecideOutputs& out, StreamHandle stream) {
  if ((in.check_info == 0) != (in.check_sumsq == 0)) fail("decide: check_info and check_sumsq go together");
  dtype_from_code(static_cast<int>(in.loss_dtype), "decide: loss");
  if (!(in.max_norm >= 0.0)) fail("decide: max_norm must be >= 0 (0: no clipping)");
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  decide_kernel<<<1, 1, 0, as_stream(stream)>>>(t.config, t.state, in, out);
  throw_if_launch_failed("decide_kernel");
}

void DeviceGuard::set_state(const GuardState& state, StreamHandle stream) {
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  store_on_device(t.state, state, stream, "set_state");
}

GuardState DeviceGuard::state(StreamHandle stream) {
  Impl& t = *impl_;
  DeviceScope scope(t.device);
  throw_if_failed(cudaMemcpyAsync(t.pinned, t.state, sizeof(GuardState), cudaMemcpyDeviceToHost, as_stream(stream)),
                  "cudaMemcpyAsync (guard state)");
  throw_if_failed(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize (guard state)");
  GuardState out;
  std::memcpy(&out, t.pinned, sizeof out);
  return out;
}

int DeviceGuard::device() const { return impl_->device; }

}  // namespace pylrcore::cuda
