// The training-step guard's decision: from one step's loss and gradient summary (non-finite count
// and sum of squares, from step/nonfinite.hpp) to the events it shows and the response the user's policy
// asks for: guard_step(), pure arithmetic on a few numbers of plain data, which GuardCore calls on the
// host and a one-thread CUDA kernel (cuda/decide.cu) calls on the device (found_inf and a clip scale
// for a fused optimizer: skip and clipping without a host sync).
//
// Events (bits of GuardEvent):
//   LOSS_NONFINITE  the loss is NaN/Inf.
//   LOSS_SPIKE      a z-score spike (against the short EMA mean/variance) of ln(loss) while every loss
//                   so far was >= 0, of the loss itself once one was < 0. A loss of exactly 0 (float32
//                   cross-entropy reaches it on a run that fits its batches) cannot be a spike and has
//                   no logarithm: it does not enter the log statistics (repro 03 has ~50 of them in
//                   20,000 steps; switching to the raw loss there made ~80 false spikes). Small-batch losses are right-
//                   skewed: on a healthy 10,000-step MLP run the largest batch loss sits 6.9 sd above
//                   the mean (a false alarm at z = 6), its logarithm 2.5 sd; a real spike is a jump by
//                   a factor, which the log keeps.
//   LOSS_EXPLOSION  the long-run explosion rule (step/explosion.hpp) began at this step: the ~20-step
//                   level of ln(loss) rose beyond its noise, a factor k above its ~500-step level (or
//                   most of the way back to the start), undid >= 10% of the progress, and stayed
//                   there for 20 losses. (Not the range test's smoothed > k x best,
//                   which fires on the noise of a long run whose loss approaches 0; that rule is used
//                   only once a loss < 0 was seen, where no factor means anything.) Only the onset is
//                   an event: the state lasts until the level comes back, and one response per
//                   explosion is what a rollback or an LR cut needs.
//   GRAD_NONFINITE  some gradient element is NaN/Inf (counted exactly from the exponent bits).
//   GRAD_SPIKE      the global gradient norm is a spike: a second detector runs on ln(norm), where
//                   the heavy right tail of gradient norms becomes close to symmetric, so the same
//                   z-score rule holds for a norm of 1e-4 and of 1e4.
//   AMP_OVERFLOW    non-finite gradients while a GradScaler is active: the scaler skips the step and
//                   lowers its scale by itself. Recorded, never a divergence response.
//   SKIP_LIMIT      more than max_consecutive_skips steps in a row were not applied: the run is stuck.
//
// Responses, in order of severity (one step takes the most severe response among its events):
//   RECORD < SKIP < SCALE_LR < ROLLBACK < RAISE. Every response above RECORD means the step's update
//   is not applied; SCALE_LR and ROLLBACK add their effect (done by the caller, which owns the
//   optimizer). Non-finite gradients can never be applied, so their response is at least SKIP.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>

#include "pylrcore/common.hpp"
#include "pylrcore/detect.hpp"
#include "pylrcore/detect_math.hpp"
#include "pylrcore/step/explosion.hpp"
#include "pylrcore/step/float_bits.hpp"
#include "pylrcore/hd.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

enum GuardEvent : std::uint32_t {
  kLossNonFinite = 1u << 0,
  kLossSpike = 1u << 1,
  kLossExplosion = 1u << 2,
  kGradNonFinite = 1u << 3,
  kGradSpike = 1u << 4,
  kAmpOverflow = 1u << 5,
  kSkipLimit = 1u << 6,
};
inline constexpr Named<GuardEvent> kGuardEventNames[] = {
    {kLossNonFinite, "LOSS_NONFINITE"}, {kLossSpike, "LOSS_SPIKE"},     {kLossExplosion, "LOSS_EXPLOSION"},
    {kGradNonFinite, "GRAD_NONFINITE"}, {kGradSpike, "GRAD_SPIKE"},     {kAmpOverflow, "AMP_OVERFLOW"},
    {kSkipLimit, "SKIP_LIMIT"},
};
constexpr int kGuardEventKinds = 7;
constexpr std::uint32_t kAllGuardEvents = (1u << kGuardEventKinds) - 1;

enum class GuardAction : std::int32_t { Record = 0, Skip = 1, ScaleLR = 2, Rollback = 3, Raise = 4 };
// in order of severity
inline constexpr Named<GuardAction> kGuardActionNames[] = {
    {GuardAction::Record, "RECORD"},     {GuardAction::Skip, "SKIP"},   {GuardAction::ScaleLR, "SCALE_LR"},
    {GuardAction::Rollback, "ROLLBACK"}, {GuardAction::Raise, "RAISE"},
};

// The run of steps not applied, and the stop when it is too long: a step not applied, or skipped by
// the GradScaler, extends the run (one applied step ends it); past `max_skips` in a row the step gets
// SKIP_LIMIT and raises.
PYLRCORE_HD inline void apply_skip_limit(std::uint32_t& events, std::int32_t& action, std::int64_t& consecutive,
                                         std::int64_t max_skips) {
  const bool not_applied = action != static_cast<std::int32_t>(GuardAction::Record) || (events & kAmpOverflow);
  consecutive = not_applied ? consecutive + 1 : 0;
  if (consecutive > max_skips) {
    events |= kSkipLimit;
    action = static_cast<std::int32_t>(GuardAction::Raise);
  }
}

inline int event_index(GuardEvent e) {
  int i = 0;
  for (std::uint32_t bits = e; bits > 1; bits >>= 1) ++i;
  return i;
}

// What to do for each kind of event, and when skipping turns into a stop.
struct GuardPolicy {
  std::array<GuardAction, kGuardEventKinds> action{
      GuardAction::Skip,    // LOSS_NONFINITE: the gradient of a NaN loss is NaN
      GuardAction::Record,  // LOSS_SPIKE
      GuardAction::Raise,   // LOSS_EXPLOSION: the run has left the stable region
      GuardAction::Skip,    // GRAD_NONFINITE
      GuardAction::Record,  // GRAD_SPIKE
      GuardAction::Record,  // AMP_OVERFLOW: the scaler skips; fixed
      GuardAction::Raise,   // SKIP_LIMIT: fixed
  };
  std::int64_t max_consecutive_skips = 25;
};

inline void validate(const GuardPolicy& p) {
  if (p.max_consecutive_skips < 1) {
    std::ostringstream s;
    s << "max_consecutive_skips must be >= 1, got " << p.max_consecutive_skips;
    fail(s.str());
  }
  for (int i = 0; i < kGuardEventKinds; ++i) {
    const auto a = static_cast<std::int32_t>(p.action[static_cast<std::size_t>(i)]);
    if (a < 0 || a > static_cast<std::int32_t>(GuardAction::Raise)) fail("policy: unknown action code");
  }
  const auto at = [&](GuardEvent e) { return p.action[static_cast<std::size_t>(event_index(e))]; };
  require(at(kGradNonFinite) != GuardAction::Record && at(kLossNonFinite) != GuardAction::Record,
          "policy: non-finite losses and gradients cannot be only recorded (the update would write NaN into "
          "the weights); use 'skip', 'scale_lr', 'rollback' or 'raise'");
  require(at(kAmpOverflow) == GuardAction::Record, "policy: amp_overflow is the GradScaler's to handle; it is only recorded");
  require(at(kSkipLimit) == GuardAction::Raise, "policy: skip_limit always raises");
}

// One step's inputs. `grads_checked` false: no gradient information this step (loss-only guard).
struct GuardInput {
  bool has_loss = false;
  double loss = 0;
  bool grads_checked = false;
  std::int64_t grad_nonfinite = 0;
  double grad_sumsq = 0;
  bool amp_active = false;  // a GradScaler owns non-finite gradients
};

// ---- the decision: one plain-data function, run by GuardCore on the host and by a one-thread
// kernel on the device (cuda/decide.cu). Config, state and decision are plain data (no
// constructors the device would have to run, no pointers): copied between host and device as bytes.

// Settings of one detector's spike rule (a DetectorConfig subset).
struct SpikeConfig {
  double spike_beta, spike_var_beta, spike_z, spike_clip;
  std::int64_t warmup;
};

struct GuardConfig {
  double beta;            // loss smoothing (debiased EMA) for the range-test EXPLOSION
  double explode_factor;  // k of both explosion rules
  SpikeConfig loss;       // the loss and log-loss detectors
  SpikeConfig norm;       // the log-norm detector
  std::int32_t action[kGuardEventKinds];  // GuardAction codes per event bit
  std::int64_t max_consecutive_skips;
};

// The z-score statistics of one stream (detect_math::spike_step's): finite values seen, their
// short EMA mean and squared error, and the last one (NaN before the first).
struct SpikeMoments {
  std::int64_t n;
  double mean, var, last;
};

// The loss: its spike statistics, and the debiased EMA with its best/start that the range-test
// EXPLOSION rule watches (used once a loss < 0 was seen).
struct GuardLossState {
  SpikeMoments moments;
  double average, beta_power;  // the EMA (smoothing.hpp's ema_step)
  double smoothed;             // its last output (NaN before the first finite loss)
  double best, start;          // lowest smoothed value from the 10th loss on, and the 10th's
  std::int32_t exploding;      // smoothed > the threshold after the last finite loss
};

// Only what the guard's events read: a Detector's window states (plateau, oscillation, decreasing)
// are not guard events and are not kept.
struct GuardState {
  std::int64_t step, consecutive_skips;
  std::int32_t log_spikes;  // no finite loss so far was < 0: spikes are tested on ln(loss)
  GuardLossState loss;
  SpikeMoments log_loss, norm;
  explosion::State explosion;
};

struct GuardDecision {
  std::int64_t step;
  std::uint32_t events;
  GuardAction action;
  std::int64_t consecutive_skips;  // steps in a row not applied, this one included
  double loss_z;                   // NaN where not computed
  double smoothed, explode_at;     // the level the explosion rule watches and its threshold (NaN while warming up)
  double grad_norm, norm_z;
  bool applied() const { return action == GuardAction::Record; }
};

template <class F>
void for_each_field(SpikeMoments& m, F&& f) {
  f("n", m.n);
  f("mean", m.mean);
  f("var", m.var);
  f("last", m.last);
}

template <class F>
void for_each_field(GuardLossState& l, F&& f) {
  for_each_field(l.moments, f);
  f("average", l.average);
  f("beta_power", l.beta_power);
  f("smoothed", l.smoothed);
  f("best", l.best);
  f("start", l.start);
  f("exploding", l.exploding);
}

// Nested structs are fields too (a binding turns them into nested dicts).
template <class F>
void for_each_field(GuardState& s, F&& f) {
  f("step", s.step);
  f("consecutive_skips", s.consecutive_skips);
  f("log_spikes", s.log_spikes);
  f("loss", s.loss);
  f("log_loss", s.log_loss);
  f("norm", s.norm);
  f("explosion", s.explosion);
}

inline GuardConfig guard_config(const DetectorConfig& loss, const DetectorConfig& norm, const GuardPolicy& policy) {
  validate(loss);
  validate(norm);
  validate(policy);
  GuardConfig c{};
  c.beta = loss.beta;
  c.explode_factor = loss.explode_factor;
  c.loss = SpikeConfig{loss.spike_beta, loss.spike_var_beta, loss.spike_z, loss.spike_clip, loss.warmup};
  c.norm = SpikeConfig{norm.spike_beta, norm.spike_var_beta, norm.spike_z, norm.spike_clip, norm.warmup};
  for (int i = 0; i < kGuardEventKinds; ++i)
    c.action[i] = static_cast<std::int32_t>(policy.action[static_cast<std::size_t>(i)]);
  c.max_consecutive_skips = policy.max_consecutive_skips;
  return c;
}

inline GuardState fresh_guard_state() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const SpikeMoments none{0, 0.0, 0.0, nan};
  GuardState s{};
  s.log_spikes = 1;
  s.loss = GuardLossState{none, 0.0, 1.0, nan, nan, nan, 0};
  s.log_loss = s.norm = none;
  s.explosion = explosion::State{};
  return s;
}

// A state from outside (a checkpoint) that guard_step() can continue from.
inline void validate(const GuardState& s) {
  require(s.step >= 0 && s.consecutive_skips >= 0, "state: step and consecutive_skips must be >= 0");
  require((s.log_spikes == 0 || s.log_spikes == 1) && (s.loss.exploding == 0 || s.loss.exploding == 1),
          "state: log_spikes and exploding must be 0 or 1");
  for (const SpikeMoments* m : {&s.loss.moments, &s.log_loss, &s.norm})
    require(m->n >= 0 && m->n <= explosion::kMaxCount && m->var >= 0 && std::isfinite(m->mean) && std::isfinite(m->var),
            "state: a detector's count must be >= 0, its mean finite and its var finite and >= 0");
  require(std::isfinite(s.loss.average) && s.loss.beta_power >= 0.0 && s.loss.beta_power <= 1.0,
          "state: the loss average must be finite and beta_power in [0, 1]");
  require(explosion::valid(s.explosion), "state: the explosion rule's state is inconsistent");
}

// One finite value into a stream's spike statistics; returns (z, spike).
PYLRCORE_HD inline detect_math::SpikeStep spike_update(SpikeMoments& m, const SpikeConfig& c, double x) {
  ++m.n;
  m.last = x;
  const bool warm = detect_math::is_warm(m.n, c.warmup);
  return detect_math::spike_step(m.mean, m.var, x, m.n, warm, c.spike_z, c.spike_clip, c.spike_beta, c.spike_var_beta);
}

// The guard's decision for one step (see the top of the file), updating `s`. On the device, ln() may
// differ from glibc's by an ulp, so z-scores of ln(loss) and ln(norm) can differ in the last bits
// there: a decision can differ only for a value within ~1e-15 (relative) of a threshold.
PYLRCORE_HD inline GuardDecision guard_step(const GuardConfig& c, GuardState& s, const GuardInput& in) {
  const double nan = float_bits::double_from_bits(0x7ff8000000000000ull);  // quiet NaN, host and device
  GuardDecision d{s.step++, 0u, GuardAction::Record, 0, nan, nan, nan, nan, nan};
  std::uint32_t events = 0;
  if (in.has_loss) {
    const bool finite = in.loss - in.loss == 0.0;
    double z = nan;  // the loss detector's z-score (NaN for a non-finite loss)
    bool spike = false;
    bool range_onset = false;  // the range-test rule's onset (used once a loss < 0 was seen)
    const explosion::Step x = explosion::update(s.explosion, in.loss, c.explode_factor, c.loss.warmup, nan);
    GuardLossState& l = s.loss;
    if (!finite) {
      events |= kLossNonFinite;  // EXPLOSION carries over a non-finite loss: no onset here
    } else {
      // Debiased EMA, best from the 10th value, EXPLOSION onset, moments: the Detector's rules
      // (detect_math.hpp, smoothing.hpp).
      l.smoothed = ema_step(EmaKind::Debiased, c.beta, l.moments.n, l.average, l.beta_power, in.loss);
      const std::int64_t n = l.moments.n + 1;
      if (n <= detect_math::kStartPoints) l.start = l.best = l.smoothed;
      else if (l.smoothed < l.best) l.best = l.smoothed;
      d.explode_at = detect_math::explode_threshold(l.best, l.start, c.explode_factor);
      const bool exploding = l.smoothed > d.explode_at;
      range_onset = exploding && !l.exploding;
      l.exploding = exploding ? 1 : 0;
      const detect_math::SpikeStep step = spike_update(l.moments, c.loss, in.loss);
      z = step.zscore;
      spike = step.spike;
      if (s.log_spikes && in.loss < 0.0) s.log_spikes = 0;  // for good
    }
    if (s.log_spikes && finite && in.loss > 0.0) {
      // A loss of exactly 0 has no logarithm and cannot be a spike: it stays out of these statistics.
      const detect_math::SpikeStep lv = spike_update(s.log_loss, c.loss, std::log(in.loss));
      if (lv.spike) events |= kLossSpike;
      d.loss_z = lv.zscore;
    } else if (!s.log_spikes) {
      if (spike) events |= kLossSpike;
      d.loss_z = z;
    }
    if (s.explosion.linear) {  // a loss < 0 was seen: the range-test rule (no scale to take factors of)
      if (range_onset) events |= kLossExplosion;
      d.smoothed = l.smoothed;
      if (!finite) d.explode_at = detect_math::explode_threshold(l.best, l.start, c.explode_factor);
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
  apply_skip_limit(events, action, s.consecutive_skips, c.max_consecutive_skips);
  d.events = events;
  d.action = static_cast<GuardAction>(action);
  d.consecutive_skips = s.consecutive_skips;
  return d;
}

// The host guard: its settings and state, and guard_step() per step.
class GuardCore {
 public:
  GuardCore(const DetectorConfig& loss, const DetectorConfig& norm, const GuardPolicy& policy)
      : config_(guard_config(loss, norm, policy)), state_(fresh_guard_state()) {}

  GuardDecision check(const GuardInput& in) { return guard_step(config_, state_, in); }

  const GuardConfig& config() const { return config_; }
  const GuardState& state() const { return state_; }
  void set_state(const GuardState& s) {
    validate(s);  // throws before anything is changed
    state_ = s;
  }
  // After a rollback the detectors go back with the weights; the step count goes on.
  void restore_detectors(const GuardState& s) {
    validate(s);
    const std::int64_t step = state_.step, consecutive = state_.consecutive_skips;
    state_ = s;
    state_.step = step;
    state_.consecutive_skips = consecutive;
  }

  std::int64_t step() const { return state_.step; }

 private:
  GuardConfig config_;
  GuardState state_;
};

}  // namespace pylrcore
