// guard_step() (the device guard's decision, run here on the CPU) against GuardCore: the same
// events, actions and statistics, to the bit, over long mixed streams.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/guard.hpp"
#include "pylrcore/guard_step.hpp"

using namespace pylrcore;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0; }

bool same(const GuardDecision& a, const GuardStepDecision& b) {
  return a.step == b.step && a.events == b.events && static_cast<std::int32_t>(a.action) == b.action &&
         a.consecutive_skips == b.consecutive_skips && same(a.loss_z, b.loss_z) && same(a.smoothed, b.smoothed) &&
         same(a.explode_at, b.explode_at) && same(a.grad_norm, b.grad_norm) && same(a.norm_z, b.norm_z);
}

// A training-like stream: log-normal noise around a falling loss, with spikes, NaN/Inf losses and
// gradients, steps without a loss or without a gradient check, AMP phases, and (optionally) a
// late phase with losses <= 0 and an explosion.
std::vector<GuardInput> stream(unsigned seed, std::size_t n, bool negative_phase) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> noise(0.0, 0.05);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<GuardInput> out;
  for (std::size_t i = 0; i < n; ++i) {
    GuardInput in;
    const double t = static_cast<double>(i) / static_cast<double>(n);
    double loss = (2.0 - t) * std::exp(noise(gen));
    if (u(gen) < 0.02) loss *= 20.0;                        // spike
    if (t > 0.85) loss *= 1.0 + 30.0 * (t - 0.85);          // explosion
    if (negative_phase && t > 0.6 && t < 0.7) loss -= 2.5;  // losses <= 0: raw-loss spikes from now on
    if (u(gen) < 0.01) loss = u(gen) < 0.5 ? kNan : kInf;
    in.has_loss = u(gen) > 0.05;
    in.loss = loss;
    in.grads_checked = u(gen) > 0.05;
    in.amp_active = t > 0.3 && t < 0.4;
    const double norm = std::exp(noise(gen) * 4.0) * (u(gen) < 0.02 ? 100.0 : 1.0);
    in.grad_sumsq = u(gen) < 0.01 ? 0.0 : norm * norm;
    in.grad_nonfinite = u(gen) < 0.01 ? 3 : 0;
    if (u(gen) < 0.005) in.grad_sumsq = kInf;
    out.push_back(in);
  }
  return out;
}

}  // namespace

TEST(guard_step_decides_like_guard_core_to_the_bit) {
  DetectorConfig loss, norm;
  loss.warmup = 20;
  norm.warmup = 15;
  norm.spike_z = 4.0;
  GuardPolicy policy;
  policy.action[static_cast<std::size_t>(event_index(kLossSpike))] = GuardAction::Skip;
  policy.action[static_cast<std::size_t>(event_index(kGradSpike))] = GuardAction::ScaleLR;
  policy.action[static_cast<std::size_t>(event_index(kLossExplosion))] = GuardAction::Rollback;
  policy.max_consecutive_skips = 3;
  std::uint32_t seen = 0, seen_positive = 0;  // seen_positive: in streams without losses < 0 (the log rules)
  for (bool negative : {false, true}) {
    for (unsigned seed : {1u, 2u, 3u}) {
      GuardCore core(loss, norm, policy);
      const GuardStepConfig config = guard_step_config(loss, norm, policy);
      GuardStepState state = guard_step_state(core.state());
      for (const GuardInput& in : stream(seed, 3000, negative)) {
        const GuardDecision expected = core.check(in);
        const GuardStepDecision got = guard_step(config, state, in);
        seen |= expected.events;
        if (!negative) seen_positive |= expected.events;
        if (!same(expected, got)) {
          CHECK(same(expected, got));
          std::fprintf(stderr, "  step %lld: events %u vs %u, action %d vs %d\n", static_cast<long long>(got.step),
                       expected.events, got.events, static_cast<int>(expected.action), got.action);
          return;
        }
      }
    }
  }
  if (seen != kAllGuardEvents) std::fprintf(stderr, "  events seen: %#x\n", seen);
  CHECK(seen == kAllGuardEvents);  // every kind of event was exercised
  CHECK(seen_positive & kLossExplosion);  // ... the long-run explosion rule (explosion.hpp) included
}

TEST(guard_step_state_can_be_taken_over_mid_run) {
  const DetectorConfig loss, norm;
  const GuardPolicy policy;
  GuardCore core(loss, norm, policy);
  const std::vector<GuardInput> inputs = stream(7, 1500, true);
  for (std::size_t i = 0; i < 900; ++i) core.check(inputs[i]);
  // From here on, the device form continues from the CPU guard's state.
  const GuardStepConfig config = guard_step_config(loss, norm, policy);
  GuardStepState state = guard_step_state(core.state());
  for (std::size_t i = 900; i < inputs.size(); ++i) {
    const GuardDecision expected = core.check(inputs[i]);
    const GuardStepDecision got = guard_step(config, state, inputs[i]);
    if (!same(expected, got)) {
      CHECK(same(expected, got));
      return;
    }
  }
}

TEST(guard_step_config_validates) {
  DetectorConfig bad;
  bad.spike_z = -1;
  CHECK_THROWS(guard_step_config(bad, DetectorConfig{}, GuardPolicy{}), std::invalid_argument);
  GuardPolicy record_nan;
  record_nan.action[static_cast<std::size_t>(event_index(kGradNonFinite))] = GuardAction::Record;
  CHECK_THROWS(guard_step_config(DetectorConfig{}, DetectorConfig{}, record_nan), std::invalid_argument);
}
