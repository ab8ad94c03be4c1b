// The one pybind11 file: converts arguments, releases the GIL around native loops, and lets
// std::invalid_argument surface as ValueError (pybind11's default mapping). The public, validated
// API lives in the Python package; this module (`pylrcore._core`) is its low-level engine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <deque>
#include <string>
#include <tuple>
#include <type_traits>

#include "pylrcore/gradient.hpp"
#include "pylrcore/smoothing.hpp"
#include "pylrcore/divergence.hpp"
#include "pylrcore/suggestion.hpp"
#include "pylrcore/detect.hpp"
#include "pylrcore/diagnosis.hpp"
#include "pylrcore/step/nonfinite.hpp"
#include "pylrcore/schedules.hpp"
#include "pylrcore/plateau.hpp"
#include "pylrcore/step/guard.hpp"
#include "pylrcore/step/snapshot.hpp"
#include "glue.hpp"

namespace py = pybind11;
using namespace pylrcore;
using glue::fields_from_dict;
using glue::fields_to_dict;

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

// One place for the shape check; dtype and contiguity are settled by the Python layer
// (pylrcore/_checks.py), which names the argument before anything reaches here.
Array as_1d(const py::handle& obj, const char* name) {
  Array a = Array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a 1-D array of floats");
  if (a.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got an array with " + std::to_string(a.ndim()) +
                          " dimensions");
  return a;
}

Array new_like(py::ssize_t n) { return Array(n); }

// One per-step number (a loss) from Python: floats take the fast path; ints of any size, numpy
// scalars and 0-d tensors convert through __float__; anything else is a TypeError that names the
// argument (pybind11's own "incompatible function arguments" names none). Too large an int is
// Python's OverflowError.
double number_arg(const py::handle& obj, const char* name) {
  if (PyFloat_CheckExact(obj.ptr())) return PyFloat_AS_DOUBLE(obj.ptr());
  if (PyBool_Check(obj.ptr()) || PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr()) ||
      !PyNumber_Check(obj.ptr()) || Py_TYPE(obj.ptr())->tp_as_number == nullptr ||
      (Py_TYPE(obj.ptr())->tp_as_number->nb_float == nullptr && Py_TYPE(obj.ptr())->tp_as_number->nb_index == nullptr))
    throw py::type_error(std::string(name) + " must be a real number, got " + std::string(py::repr(obj)));
  const double value = PyFloat_AsDouble(obj.ptr());
  if (value == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return value;
}

void bind_smoothing(py::module_& m) {
  glue::export_enum(m, "EmaKind", "enum.IntEnum", kEmaKindNames, "How the EMA is started and debiased");
  glue::export_enum(m, "NonFinite", "enum.IntEnum", kNonFiniteNames, "What a non-finite loss gives");

  m.def(
      "ema",
      [](const py::handle& x_obj, double beta, EmaKind kind, NonFinite policy) {
        Array x = as_1d(x_obj, "losses");
        check_beta(beta);
        Array out = new_like(x.size());
        const double* xp = x.data();
        double* op = out.mutable_data();
        const std::size_t n = static_cast<std::size_t>(x.size());
        {
          py::gil_scoped_release nogil;
          ema(xp, op, n, beta, kind, policy);
        }
        return out;
      },
      py::arg("losses"), py::arg("beta"), py::arg("kind"), py::arg("nonfinite"));

  py::class_<Ema>(m, "Ema")
      .def(py::init<double, EmaKind, NonFinite>(), py::arg("beta"), py::arg("kind") = EmaKind::Debiased,
           py::arg("nonfinite") = NonFinite::Mark)
      .def(
          "update",
          [](Ema& self, const py::handle& loss) { return self.update(number_arg(loss, "loss"), self.seen()); },
          py::arg("loss"))
      .def(
          "update_many",
          [](Ema& self, const py::handle& x_obj) {
            Array x = as_1d(x_obj, "losses");
            Array out = new_like(x.size());
            const double* xp = x.data();
            double* op = out.mutable_data();
            const std::size_t n = static_cast<std::size_t>(x.size());
            const std::size_t first = self.seen();
            {
              py::gil_scoped_release nogil;
              self.update(xp, op, n, first);
            }
            return out;
          },
          py::arg("losses"))
      .def("reset", &Ema::reset)
      .def_property_readonly("value", &Ema::value)
      .def_property_readonly("beta", &Ema::beta)
      .def_property_readonly("kind", &Ema::kind)
      .def_property_readonly("nonfinite", &Ema::policy)
      .def_property_readonly("count", &Ema::count)
      .def_property_readonly("nonfinite_count", [](const Ema& e) { return e.state().nonfinite; })
      .def("_get_state", [](const Ema& e) { return fields_to_dict(e.state()); })
      .def("_set_state", [](Ema& e, const py::dict& state) {
        e.set_state(fields_from_dict<EmaState>(state, "state", EmaState{}, glue::Keys::All));
      });
}

void bind_gradient(py::module_& m) {
  m.def(
      "gradient",
      [](const py::handle& y_obj, const py::object& x_obj, int edge_order) {
        Array y = as_1d(y_obj, "y");
        Array out = new_like(y.size());
        const std::size_t n = static_cast<std::size_t>(y.size());
        if (x_obj.is_none()) {
          py::gil_scoped_release nogil;
          gradient_uniform(y.data(), 1.0, out.mutable_data(), n, edge_order);
        } else {
          Array x = as_1d(x_obj, "x");
          if (x.size() != y.size())
            throw py::value_error("x and y must have the same length, got " + std::to_string(x.size()) + " and " +
                                  std::to_string(y.size()));
          py::gil_scoped_release nogil;
          gradient(y.data(), x.data(), out.mutable_data(), n, edge_order);
        }
        return out;
      },
      py::arg("y"), py::arg("x") = py::none(), py::arg("edge_order") = 1);
}

py::array_t<double> to_numpy(std::vector<double>&& v) {
  auto* heap = new std::vector<double>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<double>*>(p); });
  return py::array_t<double>(static_cast<py::ssize_t>(heap->size()), heap->data(), owner);
}

void bind_suggest(py::module_& m) {
  m.attr("DIVERGE_FACTOR") = kDivergeFactor;
  m.def("divergence_threshold", &divergence_threshold, py::arg("best"), py::arg("factor"),
        "The smoothed loss above which a sweep has diverged: best + (factor - 1) |best| (divergence.hpp).");
  glue::export_enum(m, "SuggestMethod", "enum.IntEnum", kMethodNames, "suggest()'s methods");
  glue::export_enum(m, "SuggestStatus", "enum.IntEnum", kSuggestStatusNames, "Why suggest() found no lr (or ok)");
  m.def("suggest_defaults", [] { return fields_to_dict(SuggestOptions{}); });
  m.def(
      "suggest",
      [](const py::handle& lrs_obj, const py::handle& losses_obj, const py::dict& options) {
        Array lrs = as_1d(lrs_obj, "lrs");
        Array losses = as_1d(losses_obj, "losses");
        if (lrs.size() != losses.size())
          throw py::value_error("lrs and losses must have the same length, got " + std::to_string(lrs.size()) +
                                " and " + std::to_string(losses.size()));
        const SuggestOptions opt = fields_from_dict<SuggestOptions>(options, "suggest");
        Suggestion r;
        {
          py::gil_scoped_release nogil;
          r = suggest(lrs.data(), losses.data(), static_cast<std::size_t>(lrs.size()), opt);
        }
        py::dict d = fields_to_dict(r);
        d["smoothed"] = to_numpy(std::move(r.smoothed));
        d["slope"] = to_numpy(std::move(r.slope));
        return d;
      },
      py::arg("lrs"), py::arg("losses"), py::arg("options"));
}

using FlagArray = py::array_t<std::uint32_t>;

py::object as_flag(std::uint32_t bits) { return py::cast(static_cast<DetectFlag>(bits)); }

void bind_detect(py::module_& m) {
  glue::export_enum(m, "Flag", "enum.IntFlag", kDetectFlagNames, "States reported by the streaming detector");

  // Flags are stored as integers and converted to Flag only when read: update() stays cheap.
  py::class_<Verdict>(m, "Verdict")
      .def_readonly("step", &Verdict::step)
      .def_property_readonly("flags", [](const Verdict& v) { return as_flag(v.flags); })
      .def_property_readonly("onset", [](const Verdict& v) { return as_flag(v.onset); })
      .def_readonly("flag_bits", &Verdict::flags)
      .def_readonly("onset_bits", &Verdict::onset)
      .def_readonly("smoothed", &Verdict::smoothed)
      .def_readonly("best", &Verdict::best)
      .def_readonly("zscore", &Verdict::zscore)
      .def("__repr__", [](const Verdict& v) {
        return "Verdict(step=" + std::to_string(v.step) + ", flags=" + std::string(py::repr(as_flag(v.flags))) +
               ", onset=" + std::string(py::repr(as_flag(v.onset))) + ", smoothed=" +
               std::string(py::repr(py::float_(v.smoothed))) + ", best=" + std::string(py::repr(py::float_(v.best))) +
               ", zscore=" + std::string(py::repr(py::float_(v.zscore))) + ")";
      });

  m.def("detector_defaults", [] { return fields_to_dict(DetectorConfig{}); });

  py::class_<LoggedDetector>(m, "Detector")
      .def(py::init([](const py::dict& config, std::size_t max_events) {
             return LoggedDetector(fields_from_dict<DetectorConfig>(config, "Detector"), max_events);
           }),
           py::arg("config"), py::arg("max_events") = 1000)
      .def(
          "update", [](LoggedDetector& self, const py::handle& loss) { return self.update(number_arg(loss, "loss")); },
          py::arg("loss"))
      .def(
          "_update_many",
          [](LoggedDetector& self, const py::handle& x_obj) {
            Array x = as_1d(x_obj, "losses");
            const py::ssize_t n = x.size();
            FlagArray flags(n), onset(n);
            Array smoothed(n), best(n), zscore(n);
            const double* xp = x.data();
            const LoggedDetector::Columns out{flags.mutable_data(), onset.mutable_data(), smoothed.mutable_data(),
                                              best.mutable_data(), zscore.mutable_data()};
            {
              py::gil_scoped_release nogil;
              self.update(xp, static_cast<std::size_t>(n), out);
            }
            return py::make_tuple(flags, onset, smoothed, best, zscore);
          },
          py::arg("losses"))
      .def("reset", &LoggedDetector::reset)
      .def_property_readonly("step", [](const LoggedDetector& d) { return d.core.step(); })
      .def_property_readonly("finite_count", [](const LoggedDetector& d) { return d.core.finite_count(); })
      .def_property_readonly("max_events", &LoggedDetector::max_events)
      .def_property_readonly("events_dropped", &LoggedDetector::dropped)
      .def("_config", [](const LoggedDetector& d) { return fields_to_dict(d.core.config()); })
      .def("_stats", [](const LoggedDetector& d) { return fields_to_dict(d.core.stats()); })
      .def("_events",
           [](const LoggedDetector& d) {
             py::list out;
             for (const DetectEvent& e : d.events())
               out.append(py::make_tuple(e.step, static_cast<std::uint32_t>(e.kind), e.value, e.threshold));
             return out;
           })
      .def("_get_state", [](const LoggedDetector& d) { return fields_to_dict(d.core.state()); })
      .def("_set_state",
           [](LoggedDetector& d, const py::dict& state,
              const std::vector<std::tuple<std::int64_t, std::uint32_t, double, double>>& events, std::int64_t dropped) {
             std::deque<DetectEvent> log;
             for (const auto& [step, kind, value, threshold] : events)
               log.push_back(DetectEvent{step, static_cast<DetectFlag>(kind), value, threshold});
             d.set_state(fields_from_dict<DetectorState>(state, "state"), std::move(log), dropped);
           },
           py::arg("state"), py::arg("events"), py::arg("events_dropped"));
}

void bind_diagnose(py::module_& m) {
  glue::export_enum(m, "Symptom", "enum.IntEnum", kSymptomNames, "Diagnosis codes, in priority order");
  m.def("diagnose_defaults", [] { return fields_to_dict(DiagnoseConfig{}); });
  m.def(
      "diagnose",
      [](const py::handle& x_obj, const py::dict& config) {
        Array x = as_1d(x_obj, "losses");
        const DiagnoseConfig c = fields_from_dict<DiagnoseConfig>(config, "diagnose");
        const double* xp = x.data();
        const std::size_t n = static_cast<std::size_t>(x.size());
        Diagnosis d;
        {
          py::gil_scoped_release nogil;
          d = diagnose(xp, n, c);
        }
        py::list findings;
        for (const Finding& f : d.findings)
          findings.append(py::make_tuple(static_cast<int>(f.code), f.step, f.factor_lo, f.factor_hi));
        return py::make_tuple(fields_to_dict(d.evidence), findings);
      },
      py::arg("losses"), py::arg("config"));
}

// The tiny-cuda-nn boundary: raw addresses, element counts and dtype codes, no framework types.
// pylrcore/scan.py checks devices, dtypes and contiguity (naming the argument) and keeps the
// buffers alive; here only the table's shape is checked before the GIL is released.
void bind_scan(py::module_& m) {
  // The element types a buffer table names (its dtype codes), under numpy's and torch's names:
  // pylrcore/_tensors.py maps dtypes to these, for the CPU scan and the CUDA kernels alike.
  glue::export_enum(m, "DType", "enum.IntEnum", kDTypeNames, "Element types of a buffer table");
  m.def(
      "scan",
      [](const std::vector<std::uintptr_t>& pointers, const std::vector<std::size_t>& counts,
         const std::vector<int>& dtypes, bool want_sumsq, unsigned threads) {
        glue::require_same_length("scan: pointers, counts and dtypes", pointers.size(), counts.size(), dtypes.size());
        std::vector<Buffer> buffers(pointers.size());
        for (std::size_t i = 0; i < buffers.size(); ++i)
          buffers[i] = Buffer{reinterpret_cast<const void*>(pointers[i]), counts[i], static_cast<DType>(dtypes[i])};
        ScanResult r;
        {
          py::gil_scoped_release nogil;
          r = scan(buffers.data(), buffers.size(), want_sumsq, threads);
        }
        return py::make_tuple(r.finite, r.first_bad_buffer, r.first_bad_index, r.nonfinite_count, r.sumsq);
      },
      py::arg("pointers"), py::arg("counts"), py::arg("dtypes"), py::arg("want_sumsq") = true,
      py::arg("threads") = 0u,
      "Scan raw buffers (address, element count, dtype code 0=f32 1=f64 2=f16 3=bf16) for NaN/Inf.\n"
      "Returns (finite, first_bad_buffer, first_bad_index, nonfinite_count, sumsq); -1 indices when finite.\n"
      "The caller guarantees each address is readable for count elements during the call.");
}

// A schedule arrives as its flat node list (built and validated first in pylrcore/schedules.py).
void bind_schedule(py::module_& m) {
  using Steps = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
  py::class_<Program>(m, "ScheduleProgram")
      .def(py::init([](const std::vector<std::tuple<int, std::vector<double>, std::vector<std::int64_t>,
                                                    std::vector<std::int32_t>>>& spec,
                       const std::vector<py::function>& callables) {
             std::vector<Node> nodes;
             nodes.reserve(spec.size());
             for (const auto& [family, p, ints, children] : spec)
               nodes.push_back(Node{static_cast<Family>(family), p, ints, children});
             // A user function, called back from the core (which may run without the GIL).
             std::vector<Program::Callback> callbacks;
             for (const py::function& fn : callables)
               callbacks.emplace_back([fn](std::int64_t t) {
                 py::gil_scoped_acquire gil;
                 return fn(t).cast<double>();
               });
             return Program(std::move(nodes), std::move(callbacks));
           }),
           py::arg("nodes"), py::arg("callables") = std::vector<py::function>{})
      .def_property_readonly("per_group", &Program::per_group)
      .def_property_readonly("cycles_momentum", &Program::cycles_momentum)
      .def(
          "at",
          [](const Program& prog, std::int64_t t, std::size_t group) {  // Program::at refuses t < 0
            const Affine f = prog.at(t, group);
            return py::make_tuple(f.a, f.c, f.m);
          },
          py::arg("t"), py::arg("group") = 0)
      .def(
          "evaluate",
          [](const Program& prog, const py::handle& steps_obj, const py::handle& base_obj, unsigned threads,
             bool momentum) -> py::object {
            Steps steps = Steps::ensure(steps_obj);
            Array base = as_1d(base_obj, "base_lr");
            if (!steps || steps.ndim() != 1) throw py::value_error("steps must be a 1-D array of integers");
            py::array_t<double> out({steps.size(), base.size()});
            py::array_t<double> mom(momentum ? std::vector<py::ssize_t>{steps.size(), base.size()}
                                             : std::vector<py::ssize_t>{0});
            const std::int64_t* sp = steps.data();
            const double* bp = base.data();
            double* op = out.mutable_data();
            double* mp = momentum ? mom.mutable_data() : nullptr;
            const std::size_t n = static_cast<std::size_t>(steps.size()), g = static_cast<std::size_t>(base.size());
            {
              py::gil_scoped_release nogil;
              prog.evaluate(sp, n, bp, g, op, threads, mp);
            }
            if (momentum) return py::make_tuple(out, mom);
            return std::move(out);
          },
          py::arg("steps"), py::arg("base_lrs"), py::arg("threads") = 0, py::arg("momentum") = false)
      .def(
          "step_values",
          [](const Program& prog, std::int64_t t, py::array_t<double, py::array::c_style> base,
             py::array_t<double, py::array::c_style> min_lr, py::array_t<double, py::array::c_style> scale,
             py::array_t<double, py::array::c_style> out) {
            const auto n = static_cast<std::size_t>(base.size());
            if (min_lr.size() != base.size() || scale.size() != base.size() || out.size() != base.size())
              throw py::value_error("base_lrs, min_lrs, scales and out must have one entry per param group");
            prog.step_values(t, base.data(), min_lr.data(), scale.data(), n, out.mutable_data());
          },
          py::arg("t"), py::arg("base_lrs"), py::arg("min_lrs"), py::arg("scale"), py::arg("out"))
      // the same with the cycled momentum (a separate name: an optional argument costs every step)
      .def(
          "step_values_momentum",
          [](const Program& prog, std::int64_t t, py::array_t<double, py::array::c_style> base,
             py::array_t<double, py::array::c_style> min_lr, py::array_t<double, py::array::c_style> scale,
             py::array_t<double, py::array::c_style> out, py::array_t<double, py::array::c_style> mom) {
            const auto n = static_cast<std::size_t>(base.size());
            if (min_lr.size() != base.size() || scale.size() != base.size() || out.size() != base.size() ||
                mom.size() != base.size())
              throw py::value_error("base_lrs, min_lrs, scales, out and momentum must have one entry per param group");
            prog.step_values(t, base.data(), min_lr.data(), scale.data(), n, out.mutable_data(), mom.mutable_data());
          },
          py::arg("t"), py::arg("base_lrs"), py::arg("min_lrs"), py::arg("scale"), py::arg("out"), py::arg("momentum"));

  // The schedule families, defined once in the core: name -> (code, parameter count, variadic, children)
  m.def("schedule_families", [] {
    py::dict out;
    for (const FamilyInfo& f : family_table())
      out[py::str(f.name)] = py::make_tuple(f.code, f.params, f.variadic, f.children);
    return out;
  });

  // The mode parameters' names, defined once in the core: family -> {parameter: names, by code}
  m.def("schedule_choices", [] {
    py::dict out;
    for (const auto& [family, choices] : family_choices()) {
      py::dict params;
      for (const fam::Choice& c : choices) params[c.param] = py::tuple(py::cast(c.names));
      out[family] = params;
    }
    return out;
  });

  m.def(
      "write_group_lrs",
      [](const py::list& groups, py::array_t<double, py::array::c_style> values) {
        static PyObject* key = PyUnicode_InternFromString("lr");
        glue::set_group_floats(groups, key, values, false);
      },
      py::arg("groups"), py::arg("values"));
  // The same for another key (the cycled "momentum" of SGD-like optimizers); a NaN leaves the group alone.
  m.def(
      "write_group_values",
      [](const py::list& groups, const py::str& key, py::array_t<double, py::array::c_style> values) {
        glue::set_group_floats(groups, key.ptr(), values, true);
      },
      py::arg("groups"), py::arg("key"), py::arg("values"));

  // Writes lrs into 0-d CPU tensors in place (dtype codes: float32 or float64), by address: the tensor
  // keeps its identity, so compiled/captured optimizer steps that read it see the new value. The
  // caller (pylrcore/torch/scheduler.py) checks device, dtype, shape and keeps the tensors alive.
  m.def(
      "write_scalars",
      [](const std::vector<std::uintptr_t>& addresses, const std::vector<int>& kinds,
         py::array_t<double, py::array::c_style> values) {
        if (addresses.size() != kinds.size() || static_cast<py::ssize_t>(addresses.size()) > values.size())
          throw py::value_error("addresses, kinds and values do not match");
        std::vector<DType> dtypes(kinds.size());
        for (std::size_t i = 0; i < kinds.size(); ++i) dtypes[i] = static_cast<DType>(kinds[i]);
        store_scalars(addresses.data(), dtypes.data(), values.data(), addresses.size());
      },
      py::arg("addresses"), py::arg("kinds"), py::arg("values"));
}

// Reduce-on-plateau. Settings and state cross as dicts keyed by the core's field names; the
// Python class (pylrcore/plateau.py) validates names/types first and adds the string modes.
void bind_plateau(py::module_& m) {
  m.def("plateau_defaults", [] { return fields_to_dict(PlateauConfig{}); });
  py::class_<Plateau>(m, "Plateau")
      .def(py::init([](const py::dict& config, std::vector<double> min_lrs) {
             return Plateau(fields_from_dict<PlateauConfig>(config, "Plateau"), std::move(min_lrs));
           }),
           py::arg("config"), py::arg("min_lrs"))
      .def("step", &Plateau::step, py::arg("metric"), py::arg("schedule_lrs") = std::vector<double>{})
      .def("reset", &Plateau::reset)
      .def("is_better", &Plateau::is_better, py::arg("a"), py::arg("best"))
      .def("set_base_lrs", &Plateau::set_base_lrs, py::arg("base_lrs"))
      .def("scaled_lr", &Plateau::scaled_lr, py::arg("schedule_lr"), py::arg("group"))
      .def("reduce_lr", &Plateau::reduce_lr, py::arg("old_lr"), py::arg("group"))
      .def_property_readonly("tracking", &Plateau::tracking)
      .def_property_readonly("base_lrs", &Plateau::base_lrs)
      .def_property_readonly("current_lrs", &Plateau::lrs)
      .def_property_readonly("min_lrs", &Plateau::min_lrs)
      .def_property_readonly("scales", &Plateau::scales)
      .def_property_readonly("best", [](const Plateau& p) { return p.state().best; })
      .def_property_readonly("num_bad_epochs", [](const Plateau& p) { return p.state().num_bad_epochs; })
      .def_property_readonly("cooldown_counter", [](const Plateau& p) { return p.state().cooldown_counter; })
      .def_property_readonly("last_epoch", [](const Plateau& p) { return p.state().last_epoch; })
      .def_property_readonly("num_reductions", [](const Plateau& p) { return p.state().num_reductions; })
      .def_property_readonly("in_cooldown", &Plateau::in_cooldown)
      .def("_config", [](const Plateau& p) { return fields_to_dict(p.config()); })
      .def("_get_state", [](const Plateau& p) { return fields_to_dict(p.state()); })
      .def("_set_state",
           [](Plateau& p, const py::dict& state, std::vector<double> base_lrs, std::vector<double> lrs,
              std::vector<double> scales) {
             p.set_state(fields_from_dict<PlateauState>(state, "state", p.state()), std::move(base_lrs),
                         std::move(lrs), std::move(scales));
           },
           py::arg("state"), py::arg("base_lrs"), py::arg("lrs"), py::arg("scales"));
}

void bind_guard(py::module_& m) {
  glue::export_enum(m, "GuardEvent", "enum.IntFlag", kGuardEventNames, "Events the training guard reports");
  glue::export_enum(m, "GuardAction", "enum.IntEnum", kGuardActionNames, "Responses, in order of severity");

  // Plain fields only: the Python guard reads `action_code` and `events` every step.
  py::class_<GuardDecision>(m, "GuardDecision")
      .def_readonly("step", &GuardDecision::step)
      .def_readonly("events", &GuardDecision::events)
      .def_property_readonly("action_code", [](const GuardDecision& d) { return static_cast<int>(d.action); })
      .def_readonly("consecutive_skips", &GuardDecision::consecutive_skips)
      .def_readonly("loss_z", &GuardDecision::loss_z)
      .def_readonly("smoothed", &GuardDecision::smoothed)
      .def_readonly("explode_at", &GuardDecision::explode_at)
      .def_readonly("grad_norm", &GuardDecision::grad_norm)
      .def_readonly("norm_z", &GuardDecision::norm_z);

  py::class_<GuardCore>(m, "GuardCore")
      .def(py::init([](const py::dict& loss, const py::dict& norm, const std::vector<int>& actions, std::int64_t max_skips) {
             return GuardCore(fields_from_dict<DetectorConfig>(loss, "loss detector"),
                              fields_from_dict<DetectorConfig>(norm, "norm detector"),
                              glue::guard_policy(actions, max_skips));
           }),
           py::arg("loss_config"), py::arg("norm_config"), py::arg("actions"), py::arg("max_consecutive_skips"))
      .def(
          "check",
          [](GuardCore& g, double loss, bool has_loss, bool grads_checked, std::int64_t grad_nonfinite,
             double grad_sumsq, bool amp_active) {
            return g.check(GuardInput{has_loss, loss, grads_checked, grad_nonfinite, grad_sumsq, amp_active});
          },
          py::arg("loss"), py::arg("has_loss"), py::arg("grads_checked"), py::arg("grad_nonfinite"),
          py::arg("grad_sumsq"), py::arg("amp_active"))
      .def_property_readonly("step", &GuardCore::step)
      .def("_get_state", [](const GuardCore& g) { return fields_to_dict(g.state()); })
      .def("_set_state", [](GuardCore& g, const py::handle& d) { g.set_state(glue::guard_state(d)); })
      .def("_restore_detectors", [](GuardCore& g, const py::handle& d) { g.restore_detectors(glue::guard_state(d)); });
}

// The finder's snapshot: an Arena readable as a Python buffer (torch.frombuffer views it without a
// copy, and keeps it alive), and copy_spans over raw addresses the Python layer gathered.
void bind_copy(py::module_& m) {
  py::class_<Arena>(m, "Arena", py::buffer_protocol())
      .def(py::init<std::size_t>(), py::arg("nbytes"))
      .def_property_readonly("address", [](const Arena& a) { return reinterpret_cast<std::uintptr_t>(a.data()); })
      .def_property_readonly("nbytes", &Arena::size)
      .def_property_readonly("reused", &Arena::reused)
      .def_static("release_spare", &Arena::release_spare)
      .def_static("spare_bytes", &Arena::spare_bytes)
      .def_buffer([](Arena& a) {
        return py::buffer_info(a.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(a.size())}, {1});
      });
  m.def(
      "copy_spans",
      [](const std::vector<std::uintptr_t>& dst, const std::vector<std::uintptr_t>& src,
         const std::vector<std::size_t>& nbytes, unsigned threads, bool touched) {
        glue::require_same_length("copy_spans: dst, src and nbytes", dst.size(), src.size(), nbytes.size());
        std::vector<CopySpan> spans(dst.size());
        for (std::size_t i = 0; i < spans.size(); ++i)
          spans[i] = CopySpan{reinterpret_cast<void*>(dst[i]), reinterpret_cast<const void*>(src[i]), nbytes[i]};
        py::gil_scoped_release nogil;
        copy_spans(spans, threads, touched);
      },
      py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("threads") = 1u, py::arg("touched") = false,
      "memcpy(dst[i], src[i], nbytes[i]) for every i, on up to `threads` threads (4 MiB each at least).\n"
      "touched: the destinations are memory in use, not fresh pages (large copies then stream).\n"
      "The caller guarantees the addresses are valid and the destinations overlap nothing.");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pylrcore compiled core (low level; use the pylrcore package API)";
  bind_smoothing(m);
  bind_gradient(m);
  bind_suggest(m);
  bind_detect(m);
  bind_diagnose(m);
  bind_scan(m);
  bind_schedule(m);
  bind_plateau(m);
  bind_guard(m);
  bind_copy(m);
}
