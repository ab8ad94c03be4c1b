// The per-value arithmetic of a Detector (detect.hpp) as free functions on plain numbers, so that
// nvcc compiles them for the device too: the z-score against the short EMA mean, the winsorised
// mean/variance update, and the explosion threshold. The Detector calls these, and so does the
// guard's decision (guard_step() in step/guard.hpp, on the host and the device), which is how the two
// decide alike. See detect.hpp for the rules.
//
// std::max/min/clamp are constexpr templates that device code cannot call without
// --expt-relaxed-constexpr; max_of/min_of/clamp_to spell out libstdc++'s exact comparisons, so
// every result (NaN and signed zeros included) is the same as before the functions moved here.
#pragma once
#include <cmath>
#include <cstdint>

#include "pylrcore/hd.hpp"

namespace pylrcore::detect_math {

constexpr std::int64_t kStartPoints = 10;  // `start` = smoothed level after this many finite losses
constexpr double kScaleFloor = 1e-3;       // sd and explosion margins are at least this x level
constexpr double kHuge = 1e150;            // values entering squares are clamped here (no overflow)
constexpr double kMaxZ = 1e12;             // |zscore| saturates here
constexpr double kLargest = 1.7976931348623157e308;  // DBL_MAX

PYLRCORE_HD inline double max_of(double a, double b) { return a < b ? b : a; }    // std::max
PYLRCORE_HD inline double min_of(double a, double b) { return b < a ? b : a; }    // std::min
PYLRCORE_HD inline double clamp_to(double v, double lo, double hi) {              // std::clamp
  return min_of(max_of(v, lo), hi);
}

// Past the warm-up: spikes can fire and are winsorised. z-scores need a variance from a few
// errors, so this takes at least kStartPoints values whatever `warmup` says.
PYLRCORE_HD inline bool is_warm(std::int64_t finite_count, std::int64_t warmup) {
  return finite_count > (warmup < kStartPoints ? kStartPoints : warmup);
}

// Standard deviation used for z-scores and clipping: never below kScaleFloor of the mean's size,
// so an exactly constant loss does not make every later rounding wiggle a spike.
PYLRCORE_HD inline double spread(double mean, double var) {
  return max_of(max_of(std::sqrt(var), kScaleFloor * std::fabs(mean)), 1e-300);
}

// Smoothed value at which EXPLOSION fires: best + (k-1) * max(|best|, 1e-3 |start|), at most DBL_MAX
// (beyond the largest double nothing can fire).
PYLRCORE_HD inline double explode_threshold(double best, double start, double explode_factor) {
  const double floor = kScaleFloor * std::fabs(start);
  const double at = best + (explode_factor - 1.0) * max_of(std::fabs(best), floor);
  return min_of(at, kLargest);
}

// Short EMA mean, and EMA of the squared one-step error (x - previous mean)^2: the variance a
// z-score against that mean needs. Both warm-start as running means (alpha = 1/n while larger).
// `n` counts x.
PYLRCORE_HD inline void update_moments(double& mean, double& var, double x, std::int64_t n, double spike_beta,
                                       double spike_var_beta) {
  if (n == 1) {
    mean = x;
    return;
  }
  const double d = clamp_to(x - mean, -kHuge, kHuge);
  const double count = static_cast<double>(n);
  const double var_alpha = max_of(1.0 - spike_var_beta, 1.0 / (count - 1.0));
  var += var_alpha * (d * d - var);
  mean += max_of(1.0 - spike_beta, 1.0 / count) * d;
}

struct SpikeStep {
  double zscore;   // of x against the mean/sd before x (0 for the first value)
  bool spike;      // warm and zscore > spike_z
  double clipped;  // x winsorised at mean +- spike_clip * sd once warm: what the statistics take
};

// One finite value (the n-th) into the spike statistics: z-score, spike, winsorised moment update.
PYLRCORE_HD inline SpikeStep spike_step(double& mean, double& var, double x, std::int64_t n, bool warm,
                                        double spike_z, double spike_clip, double spike_beta, double spike_var_beta) {
  const double sd = spread(mean, var);
  SpikeStep out{0.0, false, x};
  if (n >= 2) {
    out.zscore = clamp_to((x - mean) / sd, -kMaxZ, kMaxZ);
    out.spike = warm && out.zscore > spike_z;
  }
  // Winsorised (after warm-up): a spike moves the mean, variance and trend like a clip-sigma value.
  if (warm) out.clipped = clamp_to(x, mean - spike_clip * sd, mean + spike_clip * sd);
  update_moments(mean, var, out.clipped, n, spike_beta, spike_var_beta);
  return out;
}

}  // namespace pylrcore::detect_math
