#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pylrcore/plateau.hpp"

using namespace pylrcore;

namespace {
PlateauConfig config(std::int64_t patience, std::int64_t cooldown = 0, double factor = 0.5) {
  PlateauConfig c;
  c.patience = patience;
  c.cooldown = cooldown;
  c.factor = factor;
  return c;
}
}  // namespace

TEST(plateau_patience_zero_reduces_on_first_bad_epoch) {
  Plateau p(config(0), {0.0});
  p.set_base_lrs({1.0, 0.1});
  CHECK(!p.step(1.0));  // the first metric is always better than +inf
  CHECK(p.step(2.0));   // one bad epoch > patience 0
  CHECK(p.lrs()[0] == 0.5);
  CHECK(p.lrs()[1] == 0.05);
  CHECK(p.scales() == std::vector<double>{0.5});  // use (b): one shared scale, no schedule lrs given
  CHECK(!p.step(0.5));  // better: no reduction
  CHECK(p.state().num_reductions == 1);
  CHECK(p.state().last_epoch == 3);
}

TEST(plateau_patience_and_cooldown_follow_torch_order) {
  Plateau p(config(2, 2), {0.0});
  p.set_base_lrs({1.0});
  CHECK(!p.step(1.0));
  CHECK(!p.step(1.0));  // bad 1
  CHECK(!p.step(1.0));  // bad 2
  CHECK(p.step(1.0));   // bad 3 > 2: reduce, cooldown 2
  CHECK(!p.step(1.0));  // cooldown 1, bad reset
  CHECK(!p.step(1.0));  // cooldown 0, bad reset
  CHECK(!p.step(1.0));  // bad 1
  CHECK(!p.step(1.0));  // bad 2
  CHECK(p.step(1.0));   // bad 3
  CHECK(p.lrs()[0] == 0.25);
}

TEST(plateau_nan_metric_is_never_better) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Plateau p(config(1), {0.0});
  CHECK(!p.step(nan));  // not better than +inf: a bad epoch
  CHECK(p.state().num_bad_epochs == 1);
  CHECK(std::isinf(p.state().best));
  CHECK(p.step(nan));
  CHECK(!p.step(3.0));
  CHECK(p.state().best == 3.0);
}

TEST(plateau_max_mode_and_abs_threshold) {
  PlateauConfig c = config(0);
  c.maximize = true;
  c.absolute = true;
  c.threshold = 0.5;
  Plateau p(c, {0.0});
  CHECK(!p.step(1.0));
  CHECK(p.step(1.4));   // not above 1.0 + 0.5
  CHECK(!p.step(1.6));  // above
  CHECK(p.state().best == 1.6);
}

TEST(plateau_min_lr_and_eps_stop_reductions) {
  PlateauConfig c = config(0, 0, 0.1);
  c.eps = 2e-3;
  Plateau p(c, {0.05, 0.0});
  p.set_base_lrs({1.0, 0.02});
  p.step(1.0);
  CHECK(p.step(2.0));
  CHECK(p.lrs()[0] == 0.1);                 // max(0.1, 0.05)
  CHECK_CLOSE(p.lrs()[1], 0.002, 1e-15);    // 0.02 - 0.002 > 2e-3
  CHECK(p.step(2.0));
  CHECK(p.lrs()[0] == 0.05);                // clipped at min_lr
  CHECK_CLOSE(p.lrs()[1], 0.002, 1e-15);    // 0.002 - 0.0002 < eps: skipped
  CHECK(p.scaled_lr(1.0, 0) == 0.05);       // use (b): max(1 * 0.01, 0.05)
  CHECK_CLOSE(p.scaled_lr(1.0, 1), 0.01, 1e-15);
}

TEST(plateau_late_base_lrs_replay_and_state_round_trip) {
  Plateau a(config(1, 1), {1e-4});
  Plateau b(config(1, 1), {1e-4});
  a.set_base_lrs({0.3, 0.7});
  const double metrics[] = {5, 6, 7, 8, 9, 10, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
  for (double m : metrics) CHECK(a.step(m) == b.step(m));
  b.set_base_lrs({0.3, 0.7});  // replays b's reductions
  CHECK(a.lrs() == b.lrs());
  Plateau c(config(1, 1), {1e-4});
  c.set_state(a.state(), a.base_lrs(), a.lrs(), a.scales());
  for (double m : metrics) {
    CHECK(a.step(m) == c.step(m));
    CHECK(a.lrs() == c.lrs());
  }
  a.reset();
  CHECK(a.lrs() == a.base_lrs());
  CHECK(a.state().num_reductions == 0);
}

TEST(plateau_rejects_bad_settings) {
  CHECK_THROWS(Plateau(config(0, 0, 1.0), {0.0}), std::invalid_argument);
  CHECK_THROWS(Plateau(config(0, 0, 0.0), {0.0}), std::invalid_argument);
  CHECK_THROWS(Plateau(config(-1), {0.0}), std::invalid_argument);
  CHECK_THROWS(Plateau(config(0, -1), {0.0}), std::invalid_argument);
  PlateauConfig c = config(0);
  c.threshold = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS(Plateau(c, {0.0}), std::invalid_argument);
  CHECK_THROWS(Plateau(config(0), {-1.0}), std::invalid_argument);
  CHECK_THROWS(Plateau(config(0), {}), std::invalid_argument);
  Plateau p(config(0), {0.0, 0.0});
  CHECK_THROWS(p.set_base_lrs({1.0}), std::invalid_argument);
  CHECK_THROWS(p.set_base_lrs({1.0, std::nan("")}), std::invalid_argument);
  PlateauState bad;
  bad.num_bad_epochs = -1;
  CHECK_THROWS(p.set_state(bad, {}, {}, {1.0}), std::invalid_argument);
}

TEST(plateau_scales_follow_the_eps_rule_per_group_when_given_the_schedule_lrs) {
  PlateauConfig c = config(0);
  c.factor = 0.5;
  c.eps = 1e-3;
  Plateau p(c, {0.0});
  CHECK(p.scales().size() == 1);  // groups unknown: one shared scale
  CHECK(!p.step(1.0, {1.0, 1e-3}));
  CHECK(p.step(2.0, {1.0, 1e-3}));  // group 1's lr would move by 5e-4 <= eps: its scale stays
  CHECK((p.scales() == std::vector<double>{0.5, 1.0}));
  CHECK(p.scaled_lr(1.0, 0) == 0.5);
  CHECK(p.scaled_lr(1e-3, 1) == 1e-3);
  CHECK_THROWS(p.step(2.0, {1.0}), std::invalid_argument);  // two groups known now
  CHECK(p.state().last_epoch == 2);  // the refused step changed nothing
  CHECK_THROWS(p.step(2.0, {1.0, -1.0}), std::invalid_argument);
  CHECK_THROWS(p.scale(2), std::invalid_argument);
  Plateau q(c, {0.0});
  CHECK_THROWS(q.set_state(p.state(), {}, {}, {1.5}), std::invalid_argument);
  q.set_state(p.state(), {}, {}, p.scales());
  CHECK(q.scales() == p.scales());
}
