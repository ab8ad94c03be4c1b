// The LR range test's loss bookkeeping as a small value type: append a loss, smooth it, keep the
// best smoothed value, and note when the run should stop. The CUDA loss tracker
// (cuda/loss_tracker.cu) keeps this state in device memory and runs track_loss() in a one-thread
// kernel, so a GPU range test reads nothing back per step; the host fetches a copy every k steps.
// The host runs the same function in tests, so the device's numbers are predicted exactly.
//
// The rules are pylrcore.torch.finder's (torch-lr-finder's):
//   * smoothed = the EMA of the finite losses (ema_step of smoothing.hpp: Plain for torch-lr-finder's
//     smooth_f = 1 - beta, Debiased for fastai's); beta = 0 is no smoothing.
//   * best = the lowest smoothed value so far, this step's included (the first one is the raw loss).
//   * diverged at the first step where smoothed > diverge_th * best (divergence.hpp's predicate).
//   * a non-finite loss never enters the average; its step is recorded and it stops the run; the
//     smoothed history holds the loss itself there, as the finder's does.
//   * stop_step = the first step that diverged or was non-finite (-1 while the run goes on).
// Losses are recorded in a history of `capacity` slots; later ones still update the state.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>

#include "pylrcore/common.hpp"
#include "pylrcore/divergence.hpp"
#include "pylrcore/hd.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

struct LossTrackConfig {
  double beta = 0.95;  // torch-lr-finder's smooth_f = 0.05
  EmaKind kind = EmaKind::Plain;
  double diverge_th = kDivergeFactor;  // pylrcore's one factor (torch-lr-finder 5, fastai 4)
};

template <class F>
void for_each_field(LossTrackConfig& c, F&& f) {
  f("beta", c.beta);
  f("kind", c.kind);
  f("diverge_th", c.diverge_th);
}

inline void validate(const LossTrackConfig& c) {
  if (!(c.beta >= 0.0 && c.beta < 1.0)) {
    std::ostringstream s;
    s << "beta must be in [0, 1) (0: no smoothing; beta = 1 - smooth_f), got " << c.beta;
    fail(s.str());
  }
  const int kind = static_cast<int>(c.kind);
  if (kind < 0 || kind > 2) fail("kind must be 0 (plain), 1 (debiased) or 2 (lightning)");
  if (!(c.diverge_th > 1.0 && std::isfinite(c.diverge_th))) {
    std::ostringstream s;
    s << "diverge_th must be a finite number > 1, got " << c.diverge_th;
    fail(s.str());
  }
}

// Plain data, copied between host and device as bytes: no constructors run on the device.
struct LossTrackState {
  std::int64_t steps;           // losses appended, finite or not
  std::int64_t finite;          // finite losses in the average
  double average;               // EMA state (EmaState's average and beta_power)
  double beta_power;
  double smoothed;              // last smoothed value (NaN before the first finite loss)
  double best;                  // lowest smoothed value (+inf before the first finite loss)
  std::int64_t best_step;       // -1 until then
  std::int64_t diverged_step;   // first step with smoothed > diverge_th * best, or -1
  std::int64_t nonfinite_step;  // first non-finite loss, or -1
  std::int64_t stop_step;       // the first of the two, or -1
};

// What the host reads (the EMA's own average and beta_power stay internal).
template <class F>
void for_each_field(LossTrackState& s, F&& f) {
  f("steps", s.steps);
  f("finite", s.finite);
  f("smoothed", s.smoothed);
  f("best", s.best);
  f("best_step", s.best_step);
  f("diverged_step", s.diverged_step);
  f("nonfinite_step", s.nonfinite_step);
  f("stop_step", s.stop_step);
}

inline LossTrackState fresh_loss_track_state() {
  LossTrackState s{};
  s.beta_power = 1.0;
  s.smoothed = std::numeric_limits<double>::quiet_NaN();
  s.best = std::numeric_limits<double>::infinity();
  s.best_step = s.diverged_step = s.nonfinite_step = s.stop_step = -1;
  return s;
}

// x - x is 0 for every finite x and NaN for +-inf and NaN: a finiteness test with the same meaning
// on the host and the device, without <cmath> overloads.
PYLRCORE_HD inline bool is_finite_loss(double x) { return x - x == 0.0; }

// Appends one loss; writes it and its smoothed value at slot `steps` of the histories (when
// there is room). Returns the smoothed value recorded for this step.
PYLRCORE_HD inline double track_loss(const LossTrackConfig& c, LossTrackState& s, double loss, double* losses,
                                     double* smoothed, std::int64_t capacity) {
  const std::int64_t step = s.steps++;
  double out = loss;
  if (!is_finite_loss(loss)) {
    if (s.nonfinite_step < 0) s.nonfinite_step = step;
  } else {
    out = ema_step(c.kind, c.beta, s.finite, s.average, s.beta_power, loss);
    ++s.finite;
    s.smoothed = out;
    if (!(out >= s.best)) {  // also the first finite value (best = +inf)
      s.best = out;
      s.best_step = step;
    }
    if (s.diverged_step < 0 && diverged(out, s.best, c.diverge_th)) s.diverged_step = step;
  }
  if (s.stop_step < 0 && (s.nonfinite_step >= 0 || s.diverged_step >= 0)) s.stop_step = step;
  if (step < capacity) {
    losses[step] = loss;
    smoothed[step] = out;
  }
  return out;
}

}  // namespace pylrcore
