// The one pybind11 file: converts arguments, releases the GIL around native loops, and lets
// std::invalid_argument surface as ValueError (pybind11's default mapping). The public, validated
// API lives in the Python package; this module (`pylrcore._core`) is its low-level engine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>

#include "pylrcore/gradient.hpp"
#include "pylrcore/smoothing.hpp"
#include "pylrcore/suggest.hpp"
// @@includes@@

namespace py = pybind11;
using namespace pylrcore;

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

// One place for the shape check; dtype and contiguity are settled by the Python layer
// (pylrcore/_arrays.py), which names the argument before anything reaches here.
Array as_1d(const py::handle& obj, const char* name) {
  Array a = Array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a 1-D array of floats");
  if (a.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got an array with " + std::to_string(a.ndim()) +
                          " dimensions");
  return a;
}

Array new_like(py::ssize_t n) { return Array(n); }

void bind_smoothing(py::module_& m) {
  py::enum_<EmaKind>(m, "EmaKind")
      .value("plain", EmaKind::Plain)
      .value("debiased", EmaKind::Debiased)
      .value("lightning", EmaKind::Lightning);
  py::enum_<NonFinite>(m, "NonFinite")
      .value("mark", NonFinite::Mark)
      .value("hold", NonFinite::Hold)
      .value("raise_", NonFinite::Raise);

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
      .def("update", py::overload_cast<double, std::size_t>(&Ema::update), py::arg("loss"),
           py::arg("index_for_errors") = 0)
      .def(
          "update_many",
          [](Ema& self, const py::handle& x_obj) {
            Array x = as_1d(x_obj, "losses");
            Array out = new_like(x.size());
            const double* xp = x.data();
            double* op = out.mutable_data();
            const std::size_t n = static_cast<std::size_t>(x.size());
            const std::size_t first = static_cast<std::size_t>(self.count() + self.state().nonfinite);
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
      .def("get_state",
           [](const Ema& e) {
             const EmaState& s = e.state();
             return py::make_tuple(s.average, s.beta_power, s.count, s.nonfinite, s.last);
           })
      .def("set_state", [](Ema& e, double average, double beta_power, std::int64_t count, std::int64_t nonfinite,
                           double last) { e.set_state(EmaState{average, beta_power, count, nonfinite, last}); });
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
  m.def(
      "suggest",
      [](const py::handle& lrs_obj, const py::handle& losses_obj, int method, double beta, double diverge_factor,
         double zone_lo, double zone_hi, std::size_t min_points, std::int64_t lr_diff, double thresh, double adjust,
         std::int64_t skip_start, std::int64_t skip_end, std::int64_t num_it) {
        Array lrs = as_1d(lrs_obj, "lrs");
        Array losses = as_1d(losses_obj, "losses");
        if (lrs.size() != losses.size())
          throw py::value_error("lrs and losses must have the same length, got " + std::to_string(lrs.size()) +
                                " and " + std::to_string(losses.size()));
        SuggestOptions opt;
        opt.method = static_cast<Method>(method);
        opt.beta = beta;
        opt.diverge_factor = diverge_factor;
        opt.zone_lo = zone_lo;
        opt.zone_hi = zone_hi;
        opt.min_points = min_points;
        opt.slide_lr_diff = lr_diff;
        opt.slide_thresh = thresh;
        opt.slide_adjust = adjust;
        opt.skip_start = skip_start;
        opt.skip_end = skip_end;
        opt.num_it = num_it;
        Suggestion r;
        {
          py::gil_scoped_release nogil;
          r = suggest(lrs.data(), losses.data(), static_cast<std::size_t>(lrs.size()), opt);
        }
        py::dict d;
        d["status"] = static_cast<int>(r.status);
        d["reason"] = r.reason;
        d["lr"] = r.lr;
        d["index"] = r.index;
        d["zone_lo_index"] = r.zone_lo_index;
        d["zone_hi_index"] = r.zone_hi_index;
        d["min_index"] = r.min_index;
        d["cut_index"] = r.cut_index;
        d["diverged_index"] = r.diverged_index;
        d["first_nonfinite_index"] = r.first_nonfinite_index;
        d["beta"] = r.beta_used;
        d["smoothed"] = to_numpy(std::move(r.smoothed));
        d["slope"] = to_numpy(std::move(r.slope));
        return d;
      },
      py::arg("lrs"), py::arg("losses"), py::arg("method"), py::arg("beta"), py::arg("diverge_factor"),
      py::arg("zone_lo"), py::arg("zone_hi"), py::arg("min_points"), py::arg("lr_diff"), py::arg("thresh"),
      py::arg("adjust"), py::arg("skip_start"), py::arg("skip_end"), py::arg("num_it"));
}

// @@bind-functions@@

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pylrcore compiled core (low level; use the pylrcore package API)";
  bind_smoothing(m);
  bind_gradient(m);
  bind_suggest(m);
  // @@bind-calls@@
}
