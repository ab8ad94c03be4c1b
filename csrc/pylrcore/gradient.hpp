// First derivative of samples y(x) with numpy.gradient's rules, so results match it bit for bit:
// second-order central differences inside (the non-uniform three-point formula when x is given),
// first- or second-order one-sided differences at the ends (edge_order 1 or 2). Like numpy, when
// every spacing of x is exactly equal the uniform formula is used.
// Reference: numpy/lib/_function_base_impl.py, gradient(); Fornberg (1988) for the coefficients.
#pragma once
#include <cstddef>
#include <sstream>

#include "pylrcore/common.hpp"

namespace pylrcore {

inline void check_gradient_args(std::size_t n, int edge_order) {
  require(edge_order == 1 || edge_order == 2, "edge_order must be 1 or 2");
  if (n < static_cast<std::size_t>(edge_order) + 1) {
    std::ostringstream s;
    s << "y needs at least edge_order + 1 = " << edge_order + 1 << " points, got " << n;
    fail(s.str());
  }
}

// Uniform spacing dx.
inline void gradient_uniform(const double* y, double dx, double* out, std::size_t n, int edge_order = 1) {
  check_gradient_args(n, edge_order);
  for (std::size_t i = 1; i + 1 < n; ++i) out[i] = (y[i + 1] - y[i - 1]) / (2.0 * dx);
  if (edge_order == 1) {
    out[0] = (y[1] - y[0]) / dx;
    out[n - 1] = (y[n - 1] - y[n - 2]) / dx;
  } else {
    out[0] = (-1.5 / dx) * y[0] + (2.0 / dx) * y[1] + (-0.5 / dx) * y[2];
    out[n - 1] = (0.5 / dx) * y[n - 3] + (-2.0 / dx) * y[n - 2] + (1.5 / dx) * y[n - 1];
  }
}

// Coordinates x (strictly monotonic is the caller's contract; checked by the Python layer).
inline void gradient(const double* y, const double* x, double* out, std::size_t n, int edge_order = 1) {
  check_gradient_args(n, edge_order);
  bool uniform = true;
  const double dx0 = x[1] - x[0];
  for (std::size_t i = 1; i + 1 < n && uniform; ++i) uniform = (x[i + 1] - x[i]) == dx0;
  if (uniform) return gradient_uniform(y, dx0, out, n, edge_order);

  for (std::size_t i = 1; i + 1 < n; ++i) {
    const double dx1 = x[i] - x[i - 1], dx2 = x[i + 1] - x[i];
    const double a = -(dx2) / (dx1 * (dx1 + dx2));
    const double b = (dx2 - dx1) / (dx1 * dx2);
    const double c = dx1 / (dx2 * (dx1 + dx2));
    out[i] = a * y[i - 1] + b * y[i] + c * y[i + 1];
  }
  if (edge_order == 1) {
    out[0] = (y[1] - y[0]) / (x[1] - x[0]);
    out[n - 1] = (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]);
  } else {
    double dx1 = x[1] - x[0], dx2 = x[2] - x[1];
    double a = -(2.0 * dx1 + dx2) / (dx1 * (dx1 + dx2));
    double b = (dx1 + dx2) / (dx1 * dx2);
    double c = -dx1 / (dx2 * (dx1 + dx2));
    out[0] = a * y[0] + b * y[1] + c * y[2];
    dx1 = x[n - 2] - x[n - 3];
    dx2 = x[n - 1] - x[n - 2];
    a = (dx2) / (dx1 * (dx1 + dx2));
    b = -(dx2 + dx1) / (dx1 * dx2);
    c = (2.0 * dx2 + dx1) / (dx2 * (dx1 + dx2));
    out[n - 1] = a * y[n - 3] + b * y[n - 2] + c * y[n - 1];
  }
}

}  // namespace pylrcore
