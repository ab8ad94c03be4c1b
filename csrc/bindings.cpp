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
#include "pylrcore/scan.hpp"
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

// The tiny-cuda-nn boundary: raw addresses, element counts and dtype codes, no framework types.
// pylrcore/scan.py checks devices, dtypes and contiguity (naming the argument) and keeps the
// buffers alive; here only the table's shape is checked before the GIL is released.
void bind_scan(py::module_& m) {
  m.def(
      "scan",
      [](const std::vector<std::uintptr_t>& pointers, const std::vector<std::size_t>& counts,
         const std::vector<int>& dtypes, bool want_sumsq, unsigned threads) {
        if (pointers.size() != counts.size() || pointers.size() != dtypes.size())
          throw py::value_error("scan: pointers, counts and dtypes must have the same length, got " +
                                std::to_string(pointers.size()) + ", " + std::to_string(counts.size()) + " and " +
                                std::to_string(dtypes.size()));
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

// @@bind-functions@@

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pylrcore compiled core (low level; use the pylrcore package API)";
  bind_smoothing(m);
  bind_gradient(m);
  bind_scan(m);
  // @@bind-calls@@
}
