#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>

#include "check.hpp"
#include "pylrcore/step/guard.hpp"

using namespace pylrcore;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

GuardInput loss_only(double loss) {
  GuardInput in;
  in.has_loss = true;
  in.loss = loss;
  return in;
}

GuardInput grads(std::int64_t bad, double sumsq, bool amp = false) {
  GuardInput in;
  in.grads_checked = true;
  in.grad_nonfinite = bad;
  in.grad_sumsq = sumsq;
  in.amp_active = amp;
  return in;
}

GuardCore make(GuardPolicy policy = GuardPolicy{}) {
  DetectorConfig c;
  c.warmup = 20;
  return GuardCore(c, c, policy);
}

}  // namespace

TEST(guard_nonfinite_gradients_are_skipped_and_the_skip_limit_raises) {
  GuardPolicy p;
  p.max_consecutive_skips = 3;
  GuardCore g = make(p);
  CHECK(g.check(grads(0, 4.0)).applied());
  for (int i = 1; i <= 3; ++i) {
    const GuardDecision d = g.check(grads(2, kNaN));
    CHECK(d.events == kGradNonFinite && d.action == GuardAction::Skip && d.consecutive_skips == i);
  }
  const GuardDecision stop = g.check(grads(1, 1.0));
  CHECK(stop.events == (kGradNonFinite | kSkipLimit) && stop.action == GuardAction::Raise);
  CHECK(g.check(grads(0, 1.0)).consecutive_skips == 0);  // one applied step resets the count
}

TEST(guard_amp_overflow_is_recorded_but_counts_toward_the_limit) {
  GuardPolicy p;
  p.max_consecutive_skips = 2;
  GuardCore g = make(p);
  GuardDecision d = g.check(grads(5, std::numeric_limits<double>::infinity(), true));
  CHECK(d.events == kAmpOverflow && d.action == GuardAction::Record && d.consecutive_skips == 1);
  g.check(grads(5, kNaN, true));
  d = g.check(grads(5, kNaN, true));
  CHECK((d.events & kSkipLimit) && d.action == GuardAction::Raise);
}

TEST(guard_loss_spikes_use_the_log_while_losses_are_positive) {
  GuardCore g = make();
  std::mt19937_64 gen(1);
  std::lognormal_distribution<double> skewed(std::log(0.08), 0.6);  // small-batch losses: right-skewed
  int spikes = 0;
  for (int i = 0; i < 20000; ++i) spikes += (g.check(loss_only(skewed(gen))).events & kLossSpike) ? 1 : 0;
  CHECK(spikes == 0);
  const GuardDecision d = g.check(loss_only(0.08 * 200.0));  // a jump by a large factor
  CHECK((d.events & kLossSpike) && d.loss_z > 6.0);
  CHECK(g.state().log_spikes);
  g.check(loss_only(-1.0));  // a non-positive loss: the linear detector from now on
  CHECK(!g.state().log_spikes);
}

TEST(guard_explosion_is_an_event_at_its_onset_only) {
  GuardPolicy p;
  GuardCore g = make(p);
  int onsets = 0;
  GuardAction last = GuardAction::Record;
  for (int i = 0; i < 100; ++i) g.check(loss_only(1.0));
  for (int i = 0; i < 200; ++i) {
    const GuardDecision d = g.check(loss_only(50.0));
    if (d.events & kLossExplosion) {
      ++onsets;
      last = d.action;
    }
  }
  CHECK(onsets == 1 && last == GuardAction::Raise);
}

TEST(guard_the_most_severe_response_wins_and_policies_are_validated) {
  GuardPolicy p;
  p.action[static_cast<std::size_t>(event_index(kLossNonFinite))] = GuardAction::Rollback;
  p.action[static_cast<std::size_t>(event_index(kGradNonFinite))] = GuardAction::ScaleLR;
  GuardCore g = make(p);
  GuardInput in = grads(1, kNaN);
  in.has_loss = true;
  in.loss = kNaN;
  const GuardDecision d = g.check(in);
  CHECK(d.events == (kLossNonFinite | kGradNonFinite) && d.action == GuardAction::Rollback);

  GuardPolicy bad;
  bad.action[static_cast<std::size_t>(event_index(kGradNonFinite))] = GuardAction::Record;
  CHECK_THROWS(make(bad), std::invalid_argument);
  GuardPolicy zero;
  zero.max_consecutive_skips = 0;
  CHECK_THROWS(make(zero), std::invalid_argument);
}

TEST(guard_state_round_trips_and_restoring_detectors_keeps_the_step) {
  GuardCore a = make(), b = make();
  for (int i = 0; i < 60; ++i) a.check(grads(0, 1.0 + 0.01 * i));
  const GuardState saved = a.state();
  b.set_state(saved);
  const GuardDecision da = a.check(grads(0, 40.0)), db = b.check(grads(0, 40.0));
  CHECK(da.events == db.events && da.norm_z == db.norm_z && da.step == db.step);
  CHECK(da.events & kGradSpike);
  a.restore_detectors(saved);
  CHECK(a.step() == 61);
  GuardState broken = saved;
  broken.norm.var = -1.0;  // no variance is negative
  CHECK_THROWS(b.set_state(broken), std::invalid_argument);
  CHECK(b.step() == 61);  // nothing changed by the failed set_state
}
