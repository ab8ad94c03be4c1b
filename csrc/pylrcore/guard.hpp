// The training-step guard's decision: from one step's loss and gradient summary (non-finite count
// and sum of squares, from scan.hpp) to the events it shows and the response the user's policy
// asks for. Pure arithmetic on a few numbers, so the same rules can later run in a device kernel.
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
//   LOSS_EXPLOSION  the long-run explosion rule (explosion.hpp) began at this step: the ~20-step
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
#include <limits>
#include <sstream>
#include <string>

#include "pylrcore/common.hpp"
#include "pylrcore/detect.hpp"
#include "pylrcore/explosion.hpp"
#include "pylrcore/hd.hpp"

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
constexpr int kGuardEventKinds = 7;
constexpr std::uint32_t kAllGuardEvents = (1u << kGuardEventKinds) - 1;

enum class GuardAction : std::int32_t { Record = 0, Skip = 1, ScaleLR = 2, Rollback = 3, Raise = 4 };

// The run of steps not applied, and the stop when it is too long: a step not applied, or skipped by
// the GradScaler, extends the run (one applied step ends it); past `max_skips` in a row the step gets
// SKIP_LIMIT and raises. Shared by GuardCore and guard_step() (the device decision).
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

struct GuardDecision {
  std::int64_t step = 0;
  std::uint32_t events = 0;
  GuardAction action = GuardAction::Record;
  std::int64_t consecutive_skips = 0;  // steps in a row not applied, this one included
  double loss_z = std::numeric_limits<double>::quiet_NaN();
  double smoothed = std::numeric_limits<double>::quiet_NaN();    // the level the explosion rule watches
  double explode_at = std::numeric_limits<double>::quiet_NaN();  // ... and its threshold (NaN while warming up)
  double grad_norm = std::numeric_limits<double>::quiet_NaN();
  double norm_z = std::numeric_limits<double>::quiet_NaN();
  bool applied() const { return action == GuardAction::Record; }
};

struct GuardState {
  std::int64_t step = 0;
  std::int64_t consecutive_skips = 0;
  bool log_spikes = true;  // no finite loss so far was < 0: spikes are tested on ln(loss)
  DetectorState loss{}, log_loss{}, norm{};
  explosion::State explosion{};
};

class GuardCore {
 public:
  GuardCore(const DetectorConfig& loss, const DetectorConfig& norm, const GuardPolicy& policy)
      : loss_(loss), log_loss_(loss), norm_(norm), policy_(policy) {
    validate(policy_);
  }

  GuardDecision check(const GuardInput& in) {
    GuardDecision d;
    d.step = step_++;
    std::uint32_t events = 0;
    if (in.has_loss) {
      const Verdict v = loss_.update(in.loss);
      if (v.flags & kNonFinite) events |= kLossNonFinite;
      const DetectorConfig& c = loss_.config();
      const explosion::Step x =
          explosion::update(explosion_, in.loss, c.explode_factor, c.warmup, std::numeric_limits<double>::quiet_NaN());
      if (log_spikes_ && std::isfinite(in.loss) && in.loss < 0.0) log_spikes_ = false;  // for good
      if (log_spikes_ && std::isfinite(in.loss) && in.loss > 0.0) {
        const Verdict lv = log_loss_.update(std::log(in.loss));
        if (lv.flags & kSpike) events |= kLossSpike;
        d.loss_z = lv.zscore;
      } else if (!log_spikes_) {
        if (v.flags & kSpike) events |= kLossSpike;
        d.loss_z = v.zscore;
      }
      if (explosion_.linear) {  // a loss < 0 was seen: the range-test rule (no scale to take factors of)
        if (v.onset & kExplosion) events |= kLossExplosion;
        d.smoothed = v.smoothed;
        d.explode_at = loss_.explode_threshold();
      } else {
        if (x.onset) events |= kLossExplosion;
        d.smoothed = x.level;
        d.explode_at = x.at;
      }
    }
    if (in.grads_checked) {
      d.grad_norm = std::sqrt(in.grad_sumsq);
      if (in.grad_nonfinite > 0 || !std::isfinite(in.grad_sumsq)) {
        events |= in.amp_active ? kAmpOverflow : kGradNonFinite;
      } else if (d.grad_norm > 0.0) {  // ln(0) would be a non-finite input; a zero norm is no spike
        const Verdict v = norm_.update(std::log(d.grad_norm));
        if (v.flags & kSpike) events |= kGradSpike;
        d.norm_z = v.zscore;
      }
    }
    std::int32_t action = static_cast<std::int32_t>(GuardAction::Record);
    for (int i = 0; i < kGuardEventKinds; ++i) {
      const auto a = static_cast<std::int32_t>(policy_.action[static_cast<std::size_t>(i)]);
      if ((events & (1u << i)) && a > action) action = a;
    }
    apply_skip_limit(events, action, consecutive_, policy_.max_consecutive_skips);
    d.events = events;
    d.action = static_cast<GuardAction>(action);
    d.consecutive_skips = consecutive_;
    return d;
  }

  GuardState state() const {
    return GuardState{step_, consecutive_, log_spikes_, loss_.state(), log_loss_.state(), norm_.state(), explosion_};
  }
  void set_state(const GuardState& s) {
    require(s.step >= 0 && s.consecutive_skips >= 0, "state: step and consecutive_skips must be >= 0");
    require(explosion::valid(s.explosion), "state: the explosion rule's state is inconsistent");
    Detector loss = loss_, log_loss = log_loss_, norm = norm_;  // validate all before changing anything
    loss.set_state(s.loss);
    log_loss.set_state(s.log_loss);
    norm.set_state(s.norm);
    loss_ = loss;
    log_loss_ = log_loss;
    norm_ = norm;
    log_spikes_ = s.log_spikes;
    explosion_ = s.explosion;
    step_ = s.step;
    consecutive_ = s.consecutive_skips;
  }
  // After a rollback the detectors go back with the weights; the step count goes on.
  void restore_detectors(const GuardState& s) {
    const std::int64_t step = step_, consecutive = consecutive_;
    set_state(s);
    step_ = step;
    consecutive_ = consecutive;
  }

  std::int64_t step() const { return step_; }

 private:
  Detector loss_, log_loss_, norm_;
  GuardPolicy policy_;
  std::int64_t step_ = 0, consecutive_ = 0;
  bool log_spikes_ = true;
  explosion::State explosion_{};
};

}  // namespace pylrcore
