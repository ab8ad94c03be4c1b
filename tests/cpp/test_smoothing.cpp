#include <cmath>
#include <limits>
#include <vector>

#include "check.hpp"
#include "pylrcore/smoothing.hpp"

using namespace pylrcore;

TEST(ema_plain_matches_torch_lr_finder_recursion) {
  const double f = 0.05;
  std::vector<double> x{3.0, 2.5, 2.7, 1.0, 4.0};
  std::vector<double> out(x.size());
  ema(x.data(), out.data(), x.size(), 1.0 - f, EmaKind::Plain);
  double s = x[0];
  CHECK(out[0] == x[0]);
  for (std::size_t i = 1; i < x.size(); ++i) {
    s = f * x[i] + (1 - f) * s;
    CHECK_CLOSE(out[i], s, 1e-14);
  }
}

TEST(ema_debiased_constant_input_is_constant) {
  std::vector<double> x(50, 7.25), out(50);
  ema(x.data(), out.data(), x.size(), 0.98, EmaKind::Debiased);
  for (double v : out) CHECK_CLOSE(v, 7.25, 1e-13);
}

TEST(ema_lightning_first_point_is_raw_over_one_plus_beta) {
  const double b = 0.98;
  Ema e(b, EmaKind::Lightning);
  CHECK_CLOSE(e.update(2.0), 2.0 / (1.0 + b), 1e-13);
}

TEST(ema_nonfinite_mark_hold_raise) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Ema mark(0.5, EmaKind::Plain, NonFinite::Mark);
  CHECK(mark.update(2.0) == 2.0);
  CHECK(std::isnan(mark.update(nan)));
  CHECK(std::isnan(mark.update(inf)));
  CHECK(mark.update(4.0) == 3.0);  // the bad values never entered the average
  CHECK(mark.state().nonfinite == 2 && mark.count() == 2);

  Ema hold(0.5, EmaKind::Plain, NonFinite::Hold);
  hold.update(2.0);
  CHECK(hold.update(-inf) == 2.0);

  Ema raise(0.5, EmaKind::Debiased, NonFinite::Raise);
  CHECK_THROWS(raise.update(nan, 3), std::invalid_argument);
}

TEST(ema_rejects_bad_beta) {
  CHECK_THROWS(Ema(0.0, EmaKind::Debiased), std::invalid_argument);
  CHECK_THROWS(Ema(1.0, EmaKind::Debiased), std::invalid_argument);
  CHECK_THROWS(Ema(std::nan(""), EmaKind::Plain), std::invalid_argument);
}

TEST(ema_state_round_trip_resumes_exactly) {
  Ema a(0.9, EmaKind::Debiased), b(0.9, EmaKind::Debiased);
  for (int i = 0; i < 10; ++i) a.update(1.0 + 0.1 * i);
  b.set_state(a.state());
  for (int i = 0; i < 10; ++i) CHECK(a.update(0.3 * i) == b.update(0.3 * i));
}
