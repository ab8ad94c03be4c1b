// The guard's per-step decision (GuardCore::check of guard.hpp) on a small plain state, so that a
// one-thread CUDA kernel (cuda/decide.cu) can take it on the device, reading the gradient check's
// result, the loss and this state from device memory and writing found_inf and a clip scale for a
// fused optimizer: skip and clipping without a host sync.
//
// Only the statistics the guard's events read are kept: the long-run explosion rule's state
// (explosion.hpp, the same function GuardCore calls), the loss detector's debiased EMA and its
// best/start (the range-test EXPLOSION, used once a loss < 0 was seen) and its moments (raw-loss
// spikes, once a loss was <= 0), and the moments of the log-loss and log-norm detectors (spikes). The Detector's window states (plateau, oscillation,
// decreasing) are not guard events and are left out. The arithmetic is detect_math.hpp's and
// smoothing.hpp's, the code the Detector itself runs, so on the host guard_step() and GuardCore
// decide identically (tests/cpp/test_guard_step.cpp). On the device, ln() may differ from glibc's by
// an ulp, so z-scores of ln(loss) and ln(norm) can differ in the last bits: a decision can differ
// only for a value within ~1e-15 (relative) of a threshold.
#pragma once
#include <cmath>
#include <cstdint>

#include "pylrcore/detect_math.hpp"
#include "pylrcore/explosion.hpp"
#include "pylrcore/float_bits.hpp"
#include "pylrcore/guard.hpp"
#include "pylrcore/hd.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

// Settings of one detector's spike rule (a DetectorConfig subset).
struct SpikeConfig {
  double spike_beta, spike_var_beta, spike_z, spike_clip;
  std::int64_t warmup;
};

struct GuardStepConfig {
  double beta;            // loss smoothing (debiased EMA) for the range-test EXPLOSION
  double explode_factor;  // k of both explosion rules
  SpikeConfig loss;       // the loss and log-loss detectors
  SpikeConfig norm;       // the log-norm detector
  std::int32_t action[kGuardEventKinds];  // GuardAction codes per event bit
  std::int64_t max_consecutive_skips;
};

struct SpikeMoments {
  std::int64_t n;  // finite values seen
  double mean, var;
};

// Plain data, copied between host and device as bytes.
struct GuardStepState {
  std::int64_t step, consecutive;
  std::int32_t log_spikes;  // no finite loss so far was < 0
  std::int32_t exploding;   // the loss detector's EXPLOSION state after the last loss
  double average, beta_power, smoothed;  // the loss EMA (smoothed: last finite output, NaN before)
  double best, start;
  SpikeMoments loss, log_loss, norm;
  explosion::State explosion;
};

// GuardDecision as plain data.
struct GuardStepDecision {
  std::int64_t step;
  std::uint32_t events;
  std::int32_t action;
  std::int64_t consecutive_skips;
  double loss_z, smoothed, explode_at, grad_norm, norm_z;
};

inline GuardStepConfig guard_step_config(const DetectorConfig& loss, const DetectorConfig& norm, const GuardPolicy& policy) {
  validate(loss);
  validate(norm);
  validate(policy);
  GuardStepConfig c{};
  c.beta = loss.beta;
  c.explode_factor = loss.explode_factor;
  c.loss = SpikeConfig{loss.spike_beta, loss.spike_var_beta, loss.spike_z, loss.spike_clip, loss.warmup};
  c.norm = SpikeConfig{norm.spike_beta, norm.spike_var_beta, norm.spike_z, norm.spike_clip, norm.warmup};
  for (int i = 0; i < kGuardEventKinds; ++i) c.action[i] = static_cast<std::int32_t>(policy.action[static_cast<std::size_t>(i)]);
  c.max_consecutive_skips = policy.max_consecutive_skips;
  return c;
}

// The device state equivalent to a GuardCore's (for starting, or moving, a guard onto the device).
inline GuardStepState guard_step_state(const GuardState& g) {
  GuardStepState s{};
  s.step = g.step;
  s.consecutive = g.consecutive_skips;
  s.log_spikes = g.log_spikes ? 1 : 0;
  s.exploding = (g.loss.flags & kExplosion) ? 1 : 0;
  s.average = g.loss.smooth.average;
  s.beta_power = g.loss.smooth.beta_power;
  s.smoothed = g.loss.smooth.count > 0 ? g.loss.smooth.last : std::numeric_limits<double>::quiet_NaN();
  s.best = g.loss.best;
  s.start = g.loss.start;
  s.loss = SpikeMoments{g.loss.smooth.count, g.loss.mean, g.loss.var};
  s.log_loss = SpikeMoments{g.log_loss.smooth.count, g.log_loss.mean, g.log_loss.var};
  s.norm = SpikeMoments{g.norm.smooth.count, g.norm.mean, g.norm.var};
  s.explosion = g.explosion;
  return s;
}

// One finite value into a detector's spike statistics; returns (z, spike).
PYLRCORE_HD inline detect_math::SpikeStep spike_update(SpikeMoments& m, const SpikeConfig& c, double x) {
  ++m.n;
  const bool warm = detect_math::is_warm(m.n, c.warmup);
  return detect_math::spike_step(m.mean, m.var, x, m.n, warm, c.spike_z, c.spike_clip, c.spike_beta, c.spike_var_beta);
}

PYLRCORE_HD inline GuardStepDecision guard_step(const GuardStepConfig& c, GuardStepState& s, const GuardInput& in) {
  const double nan = float_bits::double_from_bits(0x7ff8000000000000ull);  // quiet NaN, host and device
  GuardStepDecision d{s.step++, 0u, 0, 0, nan, nan, nan, nan, nan};
  std::uint32_t events = 0;
  if (in.has_loss) {
    const bool finite = in.loss - in.loss == 0.0;
    double z = nan;  // the loss detector's z-score (NaN for a non-finite loss)
    bool spike = false;
    bool range_onset = false;  // the range-test rule's onset (used once a loss < 0 was seen)
    const explosion::Step x = explosion::update(s.explosion, in.loss, c.explode_factor, c.loss.warmup, nan);
    if (!finite) {
      events |= kLossNonFinite;  // EXPLOSION carries over a non-finite loss: no onset here
    } else {
      // The loss detector: debiased EMA, best from the 10th value, EXPLOSION onset, moments.
      s.smoothed = ema_step(EmaKind::Debiased, c.beta, s.loss.n, s.average, s.beta_power, in.loss);
      const std::int64_t n = s.loss.n + 1;
      if (n <= detect_math::kStartPoints) s.start = s.best = s.smoothed;
      else if (s.smoothed < s.best) s.best = s.smoothed;
      d.explode_at = detect_math::explode_threshold(s.best, s.start, c.explode_factor);
      const bool exploding = s.smoothed > d.explode_at;
      range_onset = exploding && !s.exploding;
      s.exploding = exploding ? 1 : 0;
      const detect_math::SpikeStep step = spike_update(s.loss, c.loss, in.loss);
      z = step.zscore;
      spike = step.spike;
      if (s.log_spikes && in.loss < 0.0) s.log_spikes = 0;  // for good
    }
    if (s.log_spikes && finite && in.loss > 0.0) {
      const detect_math::SpikeStep lv = spike_update(s.log_loss, c.loss, std::log(in.loss));
      if (lv.spike) events |= kLossSpike;
      d.loss_z = lv.zscore;
    } else if (!s.log_spikes) {
      if (spike) events |= kLossSpike;
      d.loss_z = z;
    }
    if (s.explosion.linear) {
      if (range_onset) events |= kLossExplosion;
      d.smoothed = s.smoothed;
      if (!finite) d.explode_at = detect_math::explode_threshold(s.best, s.start, c.explode_factor);
    } else {
      if (x.onset) events |= kLossExplosion;
      d.smoothed = x.level;
      d.explode_at = x.at;
    }
  }
  if (in.grads_checked) {
    d.grad_norm = std::sqrt(in.grad_sumsq);
    if (in.grad_nonfinite > 0 || !(in.grad_sumsq - in.grad_sumsq == 0.0)) {
      events |= in.amp_active ? kAmpOverflow : kGradNonFinite;
    } else if (d.grad_norm > 0.0) {  // ln(0) would be a non-finite input; a zero norm is no spike
      const detect_math::SpikeStep v = spike_update(s.norm, c.norm, std::log(d.grad_norm));
      if (v.spike) events |= kGradSpike;
      d.norm_z = v.zscore;
    }
  }
  std::int32_t action = static_cast<std::int32_t>(GuardAction::Record);
  for (int i = 0; i < kGuardEventKinds; ++i)
    if ((events & (1u << i)) && c.action[i] > action) action = c.action[i];
  apply_skip_limit(events, action, s.consecutive, c.max_consecutive_skips);
  d.events = events;
  d.action = action;
  d.consecutive_skips = s.consecutive;
  return d;
}

}  // namespace pylrcore
