#include <vector>

#include "check.hpp"
#include "pylrcore/gradient.hpp"

using namespace pylrcore;

TEST(gradient_exact_for_quadratics_on_nonuniform_grid) {
  // Second-order formulas differentiate a quadratic exactly, interior and (edge_order 2) ends.
  std::vector<double> x{0.0, 0.1, 0.35, 0.4, 1.0, 1.7}, y(x.size()), g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = 3 * x[i] * x[i] - 2 * x[i] + 1;
  gradient(y.data(), x.data(), g.data(), x.size(), 2);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK_CLOSE(g[i], 6 * x[i] - 2, 1e-12);
}

TEST(gradient_uniform_edges_first_order) {
  std::vector<double> y{1, 4, 9, 16}, g(4);
  gradient_uniform(y.data(), 1.0, g.data(), 4, 1);
  CHECK(g[0] == 3 && g[1] == 4 && g[2] == 6 && g[3] == 7);
}

TEST(gradient_rejects_too_few_points) {
  std::vector<double> y{1, 2}, g(2);
  CHECK_THROWS(gradient_uniform(y.data(), 1.0, g.data(), 2, 2), std::invalid_argument);
  CHECK_THROWS(gradient_uniform(y.data(), 1.0, g.data(), 1, 1), std::invalid_argument);
  CHECK_THROWS(gradient_uniform(y.data(), 1.0, g.data(), 2, 3), std::invalid_argument);
}
