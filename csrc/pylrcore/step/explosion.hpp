// The guard's explosion rule for long runs, on plain data so that the guard's decision
// (guard_step() in step/guard.hpp, on the host and the device) can call it.
//
// Why not the range test's rule: "smoothed loss > k x best" is right for a sweep, whose loss rises
// by orders of magnitude within a few hundred steps. Over a long run whose loss approaches 0 it
// fires on noise: on a healthy SGD+momentum MLP (repro 03) the minibatch loss falls to ~0.01-0.1,
// with exact zeros, and its smoothed value passes 4x its lucky lowest dip after 6,000-8,500 steps.
// Even on ln(loss), with a noise margin and against the best level, such a run passes 4x: its
// level wanders between 0.015 and 0.07 for hundreds of steps. What a person calls an explosion is
// a rise well above the *recent* level that also throws away a real share of what training
// achieved, and that lasts.
//
// The rule, on u = ln(max(loss, floor)), floor = 1e-3 x the first positive loss (float32 losses
// reach exactly 0, and rises among tiny losses are not what this rule is about):
//   level      L  debiased EMA of u, weight kLevelBeta (~20 losses): the recent geometric-mean loss
//   reference  R  debiased EMA of u, weight kReferenceBeta (~500 losses): the level before a rise;
//                 frozen while L is above the threshold, so an explosion does not raise its own bar
//   noise      v  EMA (kNoiseBeta, ~1,000 losses) of the squared one-step error (u - L_prev)^2,
//                 winsorised at 3 sd once warm and frozen like R; sd(L) = sqrt(v (1-b)/(1+b))
//   start      S  L after the 10th loss (where training began); S' = max(S, R)
//   share(r)   = ln((1 - r) e^R + r e^S'): the level with a share r of the progress undone
//   threshold  T = max( R + kNoiseZ sd(L),                     beyond the level's noise,
//                       min(R + ln k,                          a factor k above the recent level,
//                           max(share(kMostShare), R + ln k / 2)),  or sqrt(k) with most of the
//                                                              progress undone,
//                       share(kProgressShare) )                and at least 10% of it undone
//   EXPLOSION holds once L > T for kPersist consecutive losses (and while L stays above T); the
//   onset is the event. It can begin only once warm (as the spike rules).
// k is the detector's explode_factor (4). Measured (tests/soak_runs.py): on 24 healthy runs of six
// tasks and repro 03/15's runs, L/R peaked at 5.5x (repro 03's SGD) but never with 10% of the
// progress undone; an lr raised 10x or 100x mid-run fires 24-60 losses later, or the loss overflows
// first and the non-finite rule stops it at once.
// Non-positive losses: once a finite loss < 0 is seen there is no multiplicative scale; the guard
// then uses the detector's (range-test) explosion rule for good (step/guard.hpp).
#pragma once
#include <cmath>
#include <cstdint>

#include "pylrcore/detect_math.hpp"
#include "pylrcore/hd.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore::explosion {

constexpr double kLevelBeta = 0.95;       // the level: ~20 losses
constexpr double kReferenceBeta = 0.998;  // the recent level it is compared with: ~500 losses
constexpr double kNoiseBeta = 0.999;      // the noise: ~1,000 losses
constexpr double kNoiseZ = 6.0;           // the margin is at least this many sd of the level
constexpr double kMostShare = 0.75;       // back this far toward the start: an explosion at any factor
constexpr double kProgressShare = 0.1;    // and at least this share of the progress undone
constexpr std::int64_t kPersist = 20;     // ... for this many losses in a row
constexpr double kClip = 3.0;            // noise updates winsorised at this many sd
constexpr double kFloor = 1e-3;          // losses below this x the first positive loss count as it

// Plain data (copied to the device as bytes): everything needed to resume the rule exactly.
struct State {
  std::int64_t n = 0;          // losses taken (finite, >= 0, from the first positive one on)
  double floor = 0;            // kFloor x the first positive loss
  double average = 0, beta_power = 1;          // debiased EMA of u: the level
  double level = 0;                            // its last output
  double ref_average = 0, ref_beta_power = 1;  // debiased EMA of u: the reference
  double reference = 0;                        // its last output
  double noise = 0;            // EMA of the squared one-step error of u
  double start = 0;            // the level after the 10th loss
  std::int64_t above = 0;      // consecutive losses with level > threshold (saturates at kPersist + 1)
  std::int32_t linear = 0;     // a finite loss < 0 was seen: the caller uses the range-test rule for good
};

// Calls f(name, field) for every field: one list of names for bindings and checkpoints.
template <class F>
void for_each_field(State& s, F&& f) {
  f("n", s.n);
  f("floor", s.floor);
  f("average", s.average);
  f("beta_power", s.beta_power);
  f("level", s.level);
  f("ref_average", s.ref_average);
  f("ref_beta_power", s.ref_beta_power);
  f("reference", s.reference);
  f("noise", s.noise);
  f("start", s.start);
  f("above", s.above);
  f("linear", s.linear);
}

constexpr std::int64_t kMaxCount = static_cast<std::int64_t>(1) << 62;  // counters saturate here

// A state from outside (a checkpoint) that update() can take without overflow or NaN.
inline bool valid(const State& s) {
  return s.n >= 0 && s.n <= kMaxCount && s.above >= 0 && s.above <= kPersist + 1 && s.noise >= 0 &&
         std::isfinite(s.noise) && (s.linear == 0 || s.linear == 1) &&
         (s.n == 0 || (s.floor > 0 && std::isfinite(s.level) && std::isfinite(s.start) && std::isfinite(s.reference) &&
                       std::isfinite(s.average) && std::isfinite(s.ref_average) && s.beta_power >= 0 &&
                       s.beta_power < 1 && s.ref_beta_power >= 0 && s.ref_beta_power < 1));
}

// ln((1 - r) e^R + r e^S'): the level with a share r of the progress from S' down to R undone
// (a weighted mean of the two levels, so it cannot overflow).
PYLRCORE_HD inline double undone(const State& s, double r) {
  const double start = detect_math::max_of(s.start, s.reference);
  return std::log((1.0 - r) * std::exp(s.reference) + r * std::exp(start));
}

// The threshold of the level (u units) for the current state.
PYLRCORE_HD inline double threshold(const State& s, double explode_factor) {
  const double level_sd = std::sqrt(s.noise * (1.0 - kLevelBeta) / (1.0 + kLevelBeta));
  // A factor k, or sqrt(k) once most of the progress is undone (without progress, "most" alone means nothing).
  const double ln_k = std::log(explode_factor);
  const double risen = detect_math::min_of(s.reference + ln_k, detect_math::max_of(undone(s, kMostShare), s.reference + 0.5 * ln_k));
  const double at = detect_math::max_of(s.reference + kNoiseZ * level_sd, risen);
  return detect_math::max_of(at, undone(s, kProgressShare));
}

struct Step {
  bool onset;        // EXPLOSION began at this loss
  double level, at;  // the level and the threshold as losses (exp of u); NaN before there is one
};

// One loss into the rule (a non-finite one only reports). `warmup` as the detectors': the rule can
// fire only past max(warmup, 10) losses. `nan`: a quiet NaN (the device has no std::numeric_limits).
PYLRCORE_HD inline Step update(State& s, double loss, double explode_factor, std::int64_t warmup, double nan) {
  Step out{false, nan, nan};
  const bool finite = loss - loss == 0.0;
  if (finite && loss < 0.0) s.linear = 1;
  const bool take = finite && !s.linear && (s.n > 0 || loss > 0.0);  // zeros before any positive loss: no scale
  if (take) {
    if (s.n == 0) s.floor = kFloor * loss;
    const double u = std::log(detect_math::max_of(loss, s.floor));
    if (s.n < kMaxCount) ++s.n;
    const bool warm = detect_math::is_warm(s.n, warmup);
    if (s.n >= 2 && s.above == 0) {
      double e = u - s.level;
      if (warm) {
        const double sd = std::sqrt(s.noise);
        e = detect_math::clamp_to(e, -kClip * sd, kClip * sd);
      }
      const double alpha = detect_math::max_of(1.0 - kNoiseBeta, 1.0 / static_cast<double>(s.n - 1));
      s.noise += alpha * (e * e - s.noise);
    }
    s.level = ema_step(EmaKind::Debiased, kLevelBeta, s.n - 1, s.average, s.beta_power, u);
    if (s.above == 0) s.reference = ema_step(EmaKind::Debiased, kReferenceBeta, s.n - 1, s.ref_average, s.ref_beta_power, u);
    if (s.n <= detect_math::kStartPoints) s.start = s.level;
    if (warm) {
      const bool over = s.level > threshold(s, explode_factor);
      s.above = over ? (s.above <= kPersist ? s.above + 1 : s.above) : 0;
      out.onset = s.above == kPersist;
    }
  }
  if (s.n > 0 && !s.linear) {
    out.level = std::exp(s.level);
    if (detect_math::is_warm(s.n, warmup))
      out.at = detect_math::min_of(std::exp(threshold(s, explode_factor)), detect_math::kLargest);
  }
  return out;
}

}  // namespace pylrcore::explosion
