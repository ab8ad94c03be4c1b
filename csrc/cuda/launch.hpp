// The boundary between the CUDA kernels and the Python bindings: plain C++ declarations only
// (no CUDA, pybind11 or torch headers), so the bindings compile with the host compiler.
// Device memory is passed as integer addresses (torch's data_ptr()) and streams as integer
// handles (torch.cuda.current_stream().cuda_stream; 0 = the legacy default stream). Kernels are
// launched on the caller's stream and never synchronise it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pylrcore/step/chunk_check.hpp"
#include "pylrcore/step/float_bits.hpp"
#include "pylrcore/step/guard.hpp"
#include "pylrcore/step/loss_track.hpp"

namespace pylrcore::cuda {

using StreamHandle = std::uintptr_t;

// Number of usable CUDA devices; 0 when there is no driver, no device, or the runtime fails.
// Never throws: a machine without a GPU is a normal case, not an error.
int device_count() noexcept;

// CUDA runtime version the module was built against (e.g. 13000), for diagnostics.
int runtime_version() noexcept;

// Human-readable reason when device_count() is 0 ("no CUDA driver", ...), else "".
std::string unavailable_reason();

// Where a check writes its results: device addresses, 0 to leave one out.
struct CheckOutputs {
  std::uintptr_t found_inf = 0;  // float32: 1.0 if some element is NaN/Inf, else 0.0 (a fused optimizer's found_inf)
  std::uintptr_t sumsq = 0;      // float64: the sum of squares of every element (NaN/inf like step/nonfinite.hpp)
  std::uintptr_t info = 0;       // int64[3]: non-finite count, first bad tensor, its element (-1, -1 if none)
};

// A table of gradient tensors on one device, registered once: their addresses, sizes and dtypes
// and the chunk plan live in device memory, so a check is one kernel launch with no host work
// beyond the launch itself. Owns its device memory (freed by the destructor).
//
// One check at a time per table: launches must be ordered (the same stream, or streams the
// caller orders), since a launch resets the table's scratch counters for the next one.
class CheckTable {
 public:
  // Copies the table to `device` (a synchronous upload on `stream`: registration is one-time).
  // Throws std::invalid_argument for a malformed table (chunk_check::validate_table), and
  // std::runtime_error for a CUDA failure.
  CheckTable(int device, const std::vector<chunk_check::TensorRef>& tensors, StreamHandle stream);
  ~CheckTable();
  CheckTable(const CheckTable&) = delete;
  CheckTable& operator=(const CheckTable&) = delete;

  // New addresses for the same tensors (sizes and dtypes unchanged: a fresh .grad after
  // zero_grad(set_to_none=True)). Asynchronous on `stream`, from pinned memory; it waits on the
  // host only when the host is more than a few re-points ahead of the device.
  void repoint(const std::vector<std::uint64_t>& addresses, StreamHandle stream);

  // One launch: reads every element once and writes `out`. Read-only on the tensors.
  void check(const CheckOutputs& out, StreamHandle stream) const;

  int device() const;
  std::size_t tensors() const;
  std::size_t chunks() const;
  int grid() const;           // blocks per launch (the result does not depend on it)
  std::size_t bytes() const;  // device memory held

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The LR range test's loss curve kept on the device (step/loss_track.hpp's rules): each append is a
// one-thread kernel that reads the 0-d loss tensor where it lies, so no step waits for the GPU.
// The host asks for a copy of the state every few steps (request_snapshot) and picks it up when
// it has arrived (poll), never blocking; history() at the end is the one synchronous read.
class LossTracker {
 public:
  LossTracker(int device, const LossTrackConfig& config, std::int64_t capacity, StreamHandle stream);
  ~LossTracker();
  LossTracker(const LossTracker&) = delete;
  LossTracker& operator=(const LossTracker&) = delete;

  void append(std::uintptr_t loss, DType dtype, StreamHandle stream);  // loss: device address of one value
  void reset(StreamHandle stream);
  // Queues a copy of the state into pinned host memory behind the work already on `stream`.
  void request_snapshot(StreamHandle stream);
  // True once the latest requested snapshot has arrived; then `out` is that state. Never blocks.
  bool poll(LossTrackState& out);
  LossTrackState state(StreamHandle stream);  // synchronous: waits for `stream`
  // Synchronous: the recorded losses and smoothed values, min(steps, capacity) of each.
  void history(std::vector<double>& losses, std::vector<double>& smoothed, StreamHandle stream);

  const LossTrackConfig& config() const;
  std::int64_t capacity() const;
  int device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What a guard decision reads: device addresses, 0 for "not this step".
struct DecideInputs {
  std::uintptr_t loss = 0;  // one loss value of dtype loss_dtype
  DType loss_dtype = DType::F32;
  std::uintptr_t check_info = 0;   // int64[3] of a CheckTable check (CheckOutputs::info)
  std::uintptr_t check_sumsq = 0;  // float64 (CheckOutputs::sumsq); both or neither
  bool amp_active = false;         // a GradScaler owns non-finite gradients
  double max_norm = 0.0;           // clip the global norm to this (0: no clipping)
};

// What it writes (device addresses, 0 to leave one out).
struct DecideOutputs {
  std::uintptr_t found_inf = 0;   // float32: 1.0 when the step must not be applied, else 0.0
  std::uintptr_t clip_coef = 0;   // float32: min(1, max_norm / (norm + 1e-6)) as clip_grad_norm_; 1 if none
  std::uintptr_t grad_scale = 0;  // float32: 1 / clip_coef, for a fused optimizer that divides by it
  // float64[9]: step, events, action, consecutive skips, loss z, smoothed, explode_at, grad norm, norm z
  std::uintptr_t decision = 0;
};

// The guard's decision on the device (guard_step() of step/guard.hpp): one one-thread launch per step that reads
// the loss and the check's result where they lie and writes found_inf and the clip scale for a
// fused optimizer, so skipping and clipping need no host sync. The decision record is read by
// the host later (a few steps behind), which then applies RAISE/ROLLBACK/SCALE_LR.
class DeviceGuard {
 public:
  DeviceGuard(int device, const GuardConfig& config, const GuardState& state, StreamHandle stream);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

  void decide(const DecideInputs& in, const DecideOutputs& out, StreamHandle stream);
  void set_state(const GuardState& state, StreamHandle stream);
  GuardState state(StreamHandle stream);  // synchronous
  int device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pylrcore::cuda
