// The device loss tracker's update (step/loss_track.hpp), run on the CPU: the same smoothing as Ema,
// and the stop rules of pylrcore.torch.finder.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "check.hpp"
#include "pylrcore/step/loss_track.hpp"
#include "pylrcore/smoothing.hpp"

using namespace pylrcore;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

struct Run {
  LossTrackState state = fresh_loss_track_state();
  std::vector<double> losses, smoothed;
  explicit Run(std::size_t capacity) : losses(capacity, -1.0), smoothed(capacity, -1.0) {}
  void feed(const LossTrackConfig& c, const std::vector<double>& xs) {
    for (double x : xs) track_loss(c, state, x, losses.data(), smoothed.data(), static_cast<std::int64_t>(losses.size()));
  }
};

std::vector<double> valley(std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(n);
    v[i] = 2.0 - 1.5 * std::sin(3.0 * t) + 0.05 * std::cos(37.0 * static_cast<double>(i)) + (t > 0.8 ? 40.0 * (t - 0.8) : 0.0);
  }
  return v;
}

bool bit_equal(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST(loss_track_smoothing_is_ema_to_the_bit) {
  for (EmaKind kind : {EmaKind::Plain, EmaKind::Debiased, EmaKind::Lightning}) {
    const LossTrackConfig c{0.9, kind, 1e6};  // no divergence stop in this test
    const std::vector<double> xs = valley(300);
    Run run(xs.size());
    run.feed(c, xs);
    Ema ema(0.9, kind);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double expected = ema.update(xs[i]);
      if (!bit_equal(run.smoothed[i], expected)) {
        CHECK(bit_equal(run.smoothed[i], expected));
        return;
      }
      CHECK(run.losses[i] == xs[i]);
    }
    CHECK(run.state.steps == 300 && run.state.finite == 300 && run.state.stop_step == -1);
    CHECK(bit_equal(run.state.smoothed, ema.value()));
  }
}

TEST(loss_track_best_and_divergence_follow_the_finder) {
  const LossTrackConfig c{0.95, EmaKind::Plain, 5.0};
  const std::vector<double> xs = valley(400);
  Run run(xs.size());
  // The finder's loop (pylrcore/torch/finder.py): best = min(best, s), stop when s > diverge_th * best.
  Ema ema(0.95, EmaKind::Plain);
  double best = kInf;
  std::int64_t stop = -1, best_step = -1;
  for (std::size_t i = 0; i < xs.size() && stop < 0; ++i) {
    const double s = ema.update(xs[i]);
    if (s < best) best = s, best_step = static_cast<std::int64_t>(i);
    if (s > 5.0 * best) stop = static_cast<std::int64_t>(i);
  }
  CHECK(stop > 0);
  std::vector<double> head(xs.begin(), xs.begin() + stop + 1);
  run.feed(c, head);
  CHECK(run.state.diverged_step == stop && run.state.stop_step == stop && run.state.nonfinite_step == -1);
  CHECK(run.state.best == best && run.state.best_step == best_step);
  // Appending after the stop changes neither the stop step nor the first divergence.
  run.feed(c, {1.0, 2.0});
  CHECK(run.state.stop_step == stop && run.state.diverged_step == stop && run.state.steps == stop + 3);
}

TEST(loss_track_nonfinite_losses_stop_and_never_enter_the_average) {
  const LossTrackConfig c{0.5, EmaKind::Debiased, 4.0};
  Run run(8);
  run.feed(c, {2.0, 2.0, kNan, 2.0, -kInf});
  CHECK(run.state.nonfinite_step == 2 && run.state.stop_step == 2 && run.state.diverged_step == -1);
  CHECK(run.state.finite == 3 && run.state.steps == 5);
  CHECK(run.state.smoothed == 2.0);  // the average of three 2.0s, debiased
  CHECK(std::isnan(run.losses[2]) && std::isnan(run.smoothed[2]) && run.smoothed[4] == -kInf);
  CHECK(run.smoothed[3] == 2.0);
}

TEST(loss_track_first_value_is_best_and_beta_zero_is_raw) {
  const LossTrackConfig raw{0.0, EmaKind::Plain, 2.0};
  Run run(4);
  run.feed(raw, {3.0, 1.0, 1.5, 2.5});
  CHECK(run.smoothed[0] == 3.0 && run.smoothed[1] == 1.0 && run.smoothed[3] == 2.5);
  CHECK(run.state.best == 1.0 && run.state.best_step == 1);
  CHECK(run.state.diverged_step == 3);  // 2.5 > 2 x 1.0
  const LossTrackConfig debiased{0.0, EmaKind::Debiased, 2.0};
  Run d(2);
  d.feed(debiased, {3.0, 1.0});
  CHECK(d.smoothed[0] == 3.0 && d.smoothed[1] == 1.0);
}

TEST(loss_track_history_keeps_capacity_slots) {
  const LossTrackConfig c{};
  Run run(3);
  run.feed(c, {1.0, 1.0, 1.0, 1.0, 1.0});
  CHECK(run.state.steps == 5 && run.state.finite == 5);
  CHECK(run.losses.size() == 3 && run.losses[2] == 1.0);
}

TEST(loss_track_fresh_state_and_validation) {
  const LossTrackState s = fresh_loss_track_state();
  CHECK(s.steps == 0 && s.beta_power == 1.0 && std::isnan(s.smoothed) && s.best == kInf && s.stop_step == -1);
  CHECK(is_finite_loss(1e308) && !is_finite_loss(kInf) && !is_finite_loss(-kInf) && !is_finite_loss(kNan));
  CHECK_THROWS(validate(LossTrackConfig{1.0, EmaKind::Plain, 5.0}), std::invalid_argument);
  CHECK_THROWS(validate(LossTrackConfig{-0.1, EmaKind::Plain, 5.0}), std::invalid_argument);
  CHECK_THROWS(validate(LossTrackConfig{0.9, EmaKind::Plain, 1.0}), std::invalid_argument);
  CHECK_THROWS(validate(LossTrackConfig{0.9, static_cast<EmaKind>(5), 5.0}), std::invalid_argument);
  validate(LossTrackConfig{0.0, EmaKind::Debiased, 4.0});
}
