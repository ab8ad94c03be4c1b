// Bindings of the optional CUDA extension. Host compiler only: sees launch.hpp and the pure C++
// core, never CUDA headers. Device memory arrives as integer addresses and streams as integer
// handles; pylrcore/torch/cuda.py checks devices, dtypes and contiguity first (naming the argument).
// Arguments are converted, then the GIL is released around every call into CUDA.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "glue.hpp"
#include "launch.hpp"
#include "pylrcore/step/chunk_check.hpp"
#include "pylrcore/step/guard.hpp"
#include "pylrcore/step/loss_track.hpp"

namespace py = pybind11;
using namespace pylrcore;
using pylrcore::chunk_check::TensorRef;

namespace {

std::vector<TensorRef> tensor_refs(const std::vector<std::uint64_t>& addresses, const std::vector<std::uint64_t>& counts,
                                   const std::vector<int>& dtypes) {
  glue::require_same_length("addresses, counts and dtypes", addresses.size(), counts.size(), dtypes.size());
  std::vector<TensorRef> refs(addresses.size());
  for (std::size_t i = 0; i < refs.size(); ++i) refs[i] = TensorRef{addresses[i], counts[i], static_cast<DType>(dtypes[i])};
  return refs;
}

// The tracker's settings: a dict keyed by LossTrackConfig's field names (beta, kind, diverge_th),
// read by the shared glue like every other settings dict; keys left out keep the core's defaults.
LossTrackConfig loss_track_config(const py::handle& settings) {
  const LossTrackConfig config = glue::fields_from_dict<LossTrackConfig>(settings, "loss tracker config");
  validate(config);
  return config;
}

void bind_check(py::module_& m) {
  using cuda::CheckTable;
  py::class_<CheckTable>(m, "CheckTable", "Gradient table on one device; check() is one launch, no sync.")
      .def(py::init([](int device, const std::vector<std::uint64_t>& addresses, const std::vector<std::uint64_t>& counts,
                       const std::vector<int>& dtypes, std::uintptr_t stream) {
             const std::vector<TensorRef> refs = tensor_refs(addresses, counts, dtypes);
             py::gil_scoped_release release;
             return new CheckTable(device, refs, stream);
           }),
           py::arg("device"), py::arg("addresses"), py::arg("counts"), py::arg("dtypes"), py::arg("stream"))
      .def("repoint", &CheckTable::repoint, py::arg("addresses"), py::arg("stream"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "check",
          [](const CheckTable& t, std::uintptr_t found_inf, std::uintptr_t sumsq, std::uintptr_t info,
             std::uintptr_t stream) {
            py::gil_scoped_release release;
            t.check(cuda::CheckOutputs{found_inf, sumsq, info}, stream);
          },
          py::arg("found_inf"), py::arg("sumsq"), py::arg("info"), py::arg("stream"))
      .def_property_readonly("device", &CheckTable::device)
      .def_property_readonly("tensors", &CheckTable::tensors)
      .def_property_readonly("chunks", &CheckTable::chunks)
      .def_property_readonly("grid", &CheckTable::grid)
      .def_property_readonly("bytes", &CheckTable::bytes);

  // The kernel's host twin (step/chunk_check.hpp): the device result predicted bit for bit on the CPU.
  m.def(
      "check_on_host",
      [](const std::vector<std::uint64_t>& host_addresses, const std::vector<std::uint64_t>& device_addresses,
         const std::vector<std::uint64_t>& counts, const std::vector<int>& dtypes) {
        const std::vector<TensorRef> refs = tensor_refs(device_addresses, counts, dtypes);
        if (host_addresses.size() != refs.size()) throw py::value_error("host_addresses has the wrong length");
        std::vector<const void*> data(refs.size());
        for (std::size_t i = 0; i < refs.size(); ++i) data[i] = reinterpret_cast<const void*>(host_addresses[i]);
        py::gil_scoped_release release;
        const chunk_check::CheckSummary s = chunk_check::check_on_host(data.data(), refs.data(), refs.size());
        return std::make_tuple(s.sumsq, s.nonfinite, s.first_bad_tensor, s.first_bad_index);
      },
      py::arg("host_addresses"), py::arg("device_addresses"), py::arg("counts"), py::arg("dtypes"));
  m.attr("CHUNK_BYTES") = chunk_check::kChunkBytes;
}

void bind_loss_tracker(py::module_& m) {
  using cuda::LossTracker;
  py::class_<LossTracker>(m, "LossTracker", "The range test's loss curve on the device (step/loss_track.hpp).")
      .def(py::init([](int device, const py::dict& config, std::int64_t capacity, std::uintptr_t stream) {
             const LossTrackConfig settings = loss_track_config(config);
             py::gil_scoped_release release;
             return new LossTracker(device, settings, capacity, stream);
           }),
           py::arg("device"), py::arg("config"), py::arg("capacity"), py::arg("stream"))
      .def(
          "append",
          [](LossTracker& t, std::uintptr_t loss, int dtype, std::uintptr_t stream) {
            py::gil_scoped_release release;
            t.append(loss, static_cast<DType>(dtype), stream);
          },
          py::arg("loss"), py::arg("dtype"), py::arg("stream"))
      .def("reset", &LossTracker::reset, py::arg("stream"), py::call_guard<py::gil_scoped_release>())
      .def("request_snapshot", &LossTracker::request_snapshot, py::arg("stream"),
           py::call_guard<py::gil_scoped_release>())
      .def("poll",
           [](LossTracker& t) -> py::object {
             LossTrackState s{};
             if (!t.poll(s)) return py::none();
             return glue::fields_to_dict(s);
           })
      .def(
          "state",
          [](LossTracker& t, std::uintptr_t stream) {
            LossTrackState s{};
            {
              py::gil_scoped_release release;
              s = t.state(stream);
            }
            return glue::fields_to_dict(s);
          },
          py::arg("stream"))
      .def(
          "history",
          [](LossTracker& t, std::uintptr_t stream) {
            std::vector<double> losses, smoothed;
            {
              py::gil_scoped_release release;
              t.history(losses, smoothed, stream);
            }
            return std::make_tuple(losses, smoothed);
          },
          py::arg("stream"))
      .def_property_readonly("capacity", &LossTracker::capacity)
      .def_property_readonly("device", &LossTracker::device);

  // The update rule on the host, for tests and for a CPU fallback with the same numbers.
  m.def(
      "track_losses_on_host",
      [](const std::vector<double>& xs, const py::dict& settings) {
        const LossTrackConfig config = loss_track_config(settings);
        LossTrackState s = fresh_loss_track_state();
        std::vector<double> losses(xs.size()), smoothed(xs.size());
        for (double x : xs)
          track_loss(config, s, x, losses.data(), smoothed.data(), static_cast<std::int64_t>(xs.size()));
        return std::make_tuple(glue::fields_to_dict(s), smoothed);
      },
      py::arg("losses"), py::arg("config"));
}

void bind_guard(py::module_& m) {
  using cuda::DeviceGuard;
  py::class_<DeviceGuard>(m, "DeviceGuard", "The guard's decision on the device (step/guard.hpp's guard_step()).")
      .def(py::init([](int device, const py::dict& loss_config, const py::dict& norm_config, const std::vector<int>& actions,
                       std::int64_t max_consecutive_skips, const py::object& state, std::uintptr_t stream) {
             const GuardConfig config = glue::guard_config(loss_config, norm_config, actions, max_consecutive_skips);
             const GuardState initial = glue::guard_state(state);
             py::gil_scoped_release release;
             return new DeviceGuard(device, config, initial, stream);
           }),
           py::arg("device"), py::arg("loss_config"), py::arg("norm_config"), py::arg("actions"),
           py::arg("max_consecutive_skips"), py::arg("state"), py::arg("stream"))
      .def(
          "decide",
          [](DeviceGuard& g, std::uintptr_t loss, int loss_dtype, std::uintptr_t check_info, std::uintptr_t check_sumsq,
             bool amp_active, double max_norm, std::uintptr_t found_inf, std::uintptr_t clip_coef,
             std::uintptr_t grad_scale, std::uintptr_t decision, std::uintptr_t stream) {
            const cuda::DecideInputs in{loss, static_cast<DType>(loss_dtype), check_info, check_sumsq, amp_active, max_norm};
            const cuda::DecideOutputs out{found_inf, clip_coef, grad_scale, decision};
            py::gil_scoped_release release;
            g.decide(in, out, stream);
          },
          py::arg("loss"), py::arg("loss_dtype"), py::arg("check_info"), py::arg("check_sumsq"), py::arg("amp_active"),
          py::arg("max_norm"), py::arg("found_inf"), py::arg("clip_coef"), py::arg("grad_scale"), py::arg("decision"),
          py::arg("stream"))
      .def(
          "state",
          [](DeviceGuard& g, std::uintptr_t stream) {
            GuardState s{};
            {
              py::gil_scoped_release release;
              s = g.state(stream);
            }
            return glue::fields_to_dict(s);  // the layout of GuardCore._get_state()
          },
          py::arg("stream"))
      .def_property_readonly("device", &DeviceGuard::device);

  // The device decision run on the host, step by step (what GuardCore runs).
  m.def(
      "guard_steps_on_host",
      [](const py::dict& loss_config, const py::dict& norm_config, const std::vector<int>& actions,
         std::int64_t max_consecutive_skips, const py::object& state,
         const std::vector<std::tuple<bool, double, bool, std::int64_t, double, bool>>& inputs) {
        const GuardConfig config = glue::guard_config(loss_config, norm_config, actions, max_consecutive_skips);
        GuardState s = glue::guard_state(state);
        py::list out;
        for (const auto& [has_loss, loss, grads_checked, nonfinite, sumsq, amp] : inputs)
          out.append(
              glue::decision_tuple(guard_step(config, s, GuardInput{has_loss, loss, grads_checked, nonfinite, sumsq, amp})));
        return out;
      },
      py::arg("loss_config"), py::arg("norm_config"), py::arg("actions"), py::arg("max_consecutive_skips"),
      py::arg("state"), py::arg("inputs"));
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pylrcore CUDA kernels (optional; import pylrcore.torch.cuda instead)";
  m.def("device_count", &pylrcore::cuda::device_count,
        "Number of usable CUDA devices (0 without driver or device).");
  m.def("runtime_version", &pylrcore::cuda::runtime_version);
  m.def("unavailable_reason", &pylrcore::cuda::unavailable_reason);
  bind_check(m);
  bind_loss_tracker(m);
  bind_guard(m);
}
