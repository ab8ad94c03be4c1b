// Diagnosis of a whole training-loss history: the streaming detector's signals plus a few
// whole-history measures, mapped onto the users' symptom table (seed article, "Quick Reference"):
//
//   symptom                         likely cause                 suggested LR factor
//   exploding / NaN                 LR way too large             x 1/100
//   oscillating wildly              LR too large                 x 1/10
//   unstable (spikes, rising loss)  LR too large                 x 1/5 .. 1/2 (or use Adam)
//   not decreasing                  LR too small                 x 10
//   decreasing very slowly          LR too small                 x 3 .. 10
//   plateau after progress          LR was good, now too large   x 1/10 .. 1/2 (a decay schedule)
//   healthy                         -                            x 1 (maybe add a schedule)
//
// Several symptoms can hold at once; they are reported in that order (the first is the diagnosis).
// Signs that the LR is too large come first: raising an LR that is already unstable is the one
// suggestion that can make things much worse, and a diverging run hides everything else.
//
// Whole-history measures, over the finite losses (n of them):
//   first              mean of the first min(10, chunk*n) losses: the level training started from
//   middle, end        means of the central and the last chunk*n losses
//   noise              per-step standard deviation, from the median |difference| (robust to trend and spikes)
//   relative_drop      (first - end) / |first|; "measurable" when first - end > 3 standard errors
//   late_share         (middle - end) / (first - end): ~0.5 for a straight line (an LR too small to
//                      leave the linear regime), ~0 for a curve that converged or dropped early
//   rise               end - the lowest level reached, both with 3-standard-error margins: the loss
//                      came back up, significantly (GD with a small enough LR never does), and by
//                      `rising` of the progress made (first - lowest) too: a long minibatch run whose
//                      loss approaches 0 wanders by large factors near 0 (repro 15), which is noise
//                      against what it learned, not a loss that rose
//   tail_change        least-squares change over the last max(window, plateau_tail*n) losses, relative
// All sums run on losses divided by their largest magnitude, so astronomically large (exploding)
// values cannot overflow.
//
// Losses >= 0 (all usual ones) have a scale, and the streaming signals take it, as the guard does:
//   spikes     are z-score spikes of ln(loss) (minibatch losses are right-skewed: on healthy runs the
//              loss itself has dozens of 6-sd "spikes"); a loss of exactly 0 is no spike and skipped
//   explosion  is the guard's long-run rule (step/explosion.hpp), or the detector's range-test rule
//              (smoothed > k x best) when the history also ended above its first level: the
//              range-test rule alone fires on the noise of long runs whose loss approaches 0
// With a loss < 0 in the history both are the detector's, on the loss itself.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/detect.hpp"
#include "pylrcore/step/explosion.hpp"

namespace pylrcore {

// In priority order: a lower value wins.
enum class Symptom : int {
  Exploding = 0,
  Oscillating = 1,
  Unstable = 2,
  NotDecreasing = 3,
  Slow = 4,
  Plateau = 5,
  Healthy = 6,
};

inline constexpr Named<Symptom> kSymptomNames[] = {
    {Symptom::Exploding, "exploding"},          {Symptom::Oscillating, "oscillating"}, {Symptom::Unstable, "unstable"},
    {Symptom::NotDecreasing, "not_decreasing"}, {Symptom::Slow, "slow"},               {Symptom::Plateau, "plateau"},
    {Symptom::Healthy, "healthy"},
};

struct DiagnoseConfig {
  DetectorConfig detector{};          // the streaming signals (explosion, spikes, oscillation, smoothing)
  double chunk = 0.1;                 // fraction of the finite losses averaged for the middle and end levels
  double no_progress = 0.05;          // relative drop below this (or not measurable): not decreasing
  double slow_late_share = 0.35;      // share of the drop made in the second half above this: slow
  double oscillation_fraction = 0.2;  // fraction of post-warm-up steps in OSCILLATION: oscillating
  std::int64_t spike_count = 3;       // spikes needed to call the run unstable ...
  double spike_rate = 1e-3;           // ... and at least this many per finite loss
  double rising = 0.25;               // end above the lowest level reached by this fraction (of it and of the progress): unstable
  double worse_than_start = 1.5;      // median loss after step 0 at least this x the step-0 loss: unstable
  double plateau_tail = 0.25;         // fraction of the history tested for a final plateau
  double plateau_change = 0.02;       // |relative change over the tail| below this (+2 se): plateau
};

// The diagnosis settings after the detector's (for_each_field(DetectorConfig&) names those).
template <class F>
void for_each_field(DiagnoseConfig& c, F&& f) {
  for_each_field(c.detector, f);
  f("chunk", c.chunk);
  f("no_progress", c.no_progress);
  f("slow_late_share", c.slow_late_share);
  f("oscillation_fraction", c.oscillation_fraction);
  f("spike_count", c.spike_count);
  f("spike_rate", c.spike_rate);
  f("rising", c.rising);
  f("worse_than_start", c.worse_than_start);
  f("plateau_tail", c.plateau_tail);
  f("plateau_change", c.plateau_change);
}

inline void validate(const DiagnoseConfig& c) {
  validate(c.detector);
  auto in_open_unit = [](const char* name, double v, const char* example) {
    if (!(v > 0.0 && v < 1.0)) {
      std::ostringstream s;
      s << name << " must be in (0, 1) (e.g. " << example << "), got " << v;
      fail(s.str());
    }
  };
  if (!(c.chunk > 0.0 && c.chunk <= 1.0 / 3.0))
    fail("chunk must be in (0, 1/3] (e.g. 0.1) so that the middle and end levels do not overlap, got " +
         std::to_string(c.chunk));
  in_open_unit("no_progress", c.no_progress, "0.05");
  in_open_unit("slow_late_share", c.slow_late_share, "0.35");
  in_open_unit("oscillation_fraction", c.oscillation_fraction, "0.2");
  in_open_unit("spike_rate", c.spike_rate, "0.001");
  in_open_unit("plateau_tail", c.plateau_tail, "0.25");
  in_open_unit("plateau_change", c.plateau_change, "0.02");
  if (!(c.rising > 0.0 && std::isfinite(c.rising))) fail("rising must be a finite number > 0 (e.g. 0.25)");
  if (!(c.worse_than_start > 1.0 && std::isfinite(c.worse_than_start)))
    fail("worse_than_start must be a finite number > 1 (e.g. 1.5)");
  if (c.spike_count < 1) fail("spike_count must be >= 1 (e.g. 3)");
}

// The numbers behind a diagnosis. Steps are indices into the history; -1 means "did not happen".
struct Evidence {
  std::int64_t points = 0, finite = 0, nonfinite = 0;
  std::int64_t first_nonfinite = -1, explosion_step = -1, first_spike = -1, oscillation_step = -1;
  std::int64_t plateau_step = -1, best_step = -1, rise_step = -1;
  std::int64_t spikes = 0;
  double first = 0, middle = 0, end = 0;  // levels (see the file comment)
  double best = 0;                                   // lowest smoothed loss
  double relative_drop = 0;                          // (first - end) / |first|
  double drop_se = 0;                                // standard error of first - end
  double late_share = 0;                             // (middle - end) / (first - end); NaN without a drop
  double progress = 0;                               // (first - best) / |first|
  double rise = 0;                                   // (end - level at rise_step) / |that level|
  double start_ratio = 0;                            // median loss after step 0 / step-0 loss (positive losses)
  double noise = 0;                                  // per-step standard deviation
  double alternation = 0;                            // sign-change rate of successive differences
  double amplitude = 0;                              // median |difference| / median |loss|
  double oscillation_fraction = 0;                   // of post-warm-up finite steps flagged OSCILLATION
  double tail_change = 0;                            // change over the tail / |tail level|
  double tail_change_se = 0;
};

template <class F>
void for_each_field(Evidence& e, F&& f) {
  f("points", e.points);
  f("finite", e.finite);
  f("nonfinite", e.nonfinite);
  f("first_nonfinite", e.first_nonfinite);
  f("explosion_step", e.explosion_step);
  f("spikes", e.spikes);
  f("first_spike", e.first_spike);
  f("oscillation_step", e.oscillation_step);
  f("plateau_step", e.plateau_step);
  f("best_step", e.best_step);
  f("rise_step", e.rise_step);
  f("first", e.first);
  f("middle", e.middle);
  f("end", e.end);
  f("best", e.best);
  f("relative_drop", e.relative_drop);
  f("drop_se", e.drop_se);
  f("late_share", e.late_share);
  f("progress", e.progress);
  f("rise", e.rise);
  f("start_ratio", e.start_ratio);
  f("noise", e.noise);
  f("alternation", e.alternation);
  f("amplitude", e.amplitude);
  f("oscillation_fraction", e.oscillation_fraction);
  f("tail_change", e.tail_change);
  f("tail_change_se", e.tail_change_se);
}

struct Finding {
  Symptom code = Symptom::Healthy;
  std::int64_t step = -1;
  double factor_lo = 1, factor_hi = 1;  // suggested multipliers of the current LR
};

struct Diagnosis {
  Evidence evidence;
  std::vector<Finding> findings;  // in priority order; findings[0] is the diagnosis
};

inline Finding make_finding(Symptom code, std::int64_t step) {
  switch (code) {
    case Symptom::Exploding: return {code, step, 0.01, 0.01};
    case Symptom::Oscillating: return {code, step, 0.1, 0.1};
    case Symptom::Unstable: return {code, step, 0.2, 0.5};
    case Symptom::NotDecreasing: return {code, step, 10.0, 10.0};
    case Symptom::Slow: return {code, step, 3.0, 10.0};
    case Symptom::Plateau: return {code, step, 0.1, 0.5};
    case Symptom::Healthy: break;
  }
  return {Symptom::Healthy, step, 1.0, 1.0};
}

namespace diagnose_detail {

inline double mean_of(const double* x, std::size_t n) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += x[i];
  return sum / static_cast<double>(n);
}

// Median by selection (O(n)); `scratch` is reordered.
inline double median_of(std::vector<double>& scratch) {
  const std::size_t mid = scratch.size() / 2;
  const auto at = scratch.begin() + static_cast<std::ptrdiff_t>(mid);
  std::nth_element(scratch.begin(), at, scratch.end());
  double m = *at;
  if (scratch.size() % 2 == 0) m = 0.5 * (m + *std::max_element(scratch.begin(), at));
  return m;
}

// Ordinary least-squares slope of y against 0..n-1 and its standard error (centred sums).
inline void ols_slope(const double* y, std::size_t n, double& slope, double& se) {
  slope = se = 0.0;
  if (n < 3) return;
  const double t_mean = 0.5 * static_cast<double>(n - 1);
  const double y_mean = mean_of(y, n);
  double stt = 0, sty = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) - t_mean;
    stt += t * t;
    sty += t * (y[i] - y_mean);
  }
  slope = sty / stt;
  double rss = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double r = y[i] - y_mean - slope * (static_cast<double>(i) - t_mean);
    rss += r * r;
  }
  se = std::sqrt(rss / static_cast<double>(n - 2) / stt);
}

// A ratio of tiny numbers can overflow: report it as undefined rather than infinite.
inline double finite_or_nan(double x) { return std::isfinite(x) ? x : std::numeric_limits<double>::quiet_NaN(); }

// Standard deviation of the debiased EMA after k values of i.i.d. noise with unit sd.
inline double smoothed_sd(double beta, std::size_t k) {
  const double bk = std::pow(beta, static_cast<double>(k));
  return std::sqrt((1.0 - beta) / (1.0 + beta) * (1.0 + bk) / (1.0 - bk));
}

}  // namespace diagnose_detail

constexpr std::size_t kMinDiagnosePoints = 10;

inline Diagnosis diagnose(const double* losses, std::size_t n, const DiagnoseConfig& config = DiagnoseConfig{}) {
  using namespace diagnose_detail;
  validate(config);
  if (n < kMinDiagnosePoints) {
    std::ostringstream s;
    s << "losses has " << n << " points; at least " << kMinDiagnosePoints << " are needed to diagnose a history";
    fail(s.str());
  }
  Diagnosis out;
  Evidence& ev = out.evidence;
  ev.points = static_cast<std::int64_t>(n);

  // 1. The streaming signals, and the finite losses (with their smoothed values) in order.
  bool has_scale = true;  // no finite loss < 0: spikes on ln(loss) and the long-run explosion rule
  for (std::size_t i = 0; i < n; ++i) has_scale = has_scale && !(std::isfinite(losses[i]) && losses[i] < 0.0);
  Detector detector(config.detector), log_detector(config.detector);
  explosion::State long_run;
  std::int64_t range_explosion = -1;  // the detector's (range-test) onset
  std::vector<double> y, smoothed;
  std::vector<std::int64_t> step_of;
  y.reserve(n);
  smoothed.reserve(n);
  step_of.reserve(n);
  std::int64_t warm_steps = 0, oscillating_steps = 0;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (std::size_t i = 0; i < n; ++i) {
    const Verdict v = detector.update(losses[i]);
    const auto step = static_cast<std::int64_t>(i);
    if (has_scale &&
        explosion::update(long_run, losses[i], config.detector.explode_factor, config.detector.warmup, nan).onset &&
        ev.explosion_step < 0)
      ev.explosion_step = step;
    if (v.flags & kNonFinite) {
      ++ev.nonfinite;
      if (ev.first_nonfinite < 0) ev.first_nonfinite = step;
      continue;
    }
    y.push_back(losses[i]);
    smoothed.push_back(v.smoothed);
    step_of.push_back(step);
    if ((v.onset & kExplosion) && range_explosion < 0) range_explosion = step;
    bool spike = false;
    if (!has_scale) spike = v.onset & kSpike;
    else if (losses[i] > 0.0) spike = log_detector.update(std::log(losses[i])).onset & kSpike;
    if (spike) {
      ++ev.spikes;
      if (ev.first_spike < 0) ev.first_spike = step;
    }
    if ((v.onset & kOscillation) && ev.oscillation_step < 0) ev.oscillation_step = step;
    if (detector.warm()) {
      ++warm_steps;
      if (v.flags & kOscillation) ++oscillating_steps;
    }
  }
  const std::size_t m = y.size();
  ev.finite = static_cast<std::int64_t>(m);
  ev.oscillation_fraction = warm_steps > 0 ? static_cast<double>(oscillating_steps) / static_cast<double>(warm_steps) : 0.0;

  std::vector<Finding>& found = out.findings;
  const auto push_exploding = [&] {
    if (ev.first_nonfinite < 0 && ev.explosion_step < 0) return;
    std::int64_t step = ev.first_nonfinite;
    if (step < 0 || (ev.explosion_step >= 0 && ev.explosion_step < step)) step = ev.explosion_step;
    found.push_back(make_finding(Symptom::Exploding, step));
  };
  if (!has_scale) ev.explosion_step = range_explosion;
  if (m < 3) {  // nothing else can be measured on fewer finite losses
    if (ev.explosion_step < 0) ev.explosion_step = range_explosion;
    push_exploding();
    if (found.empty()) found.push_back(make_finding(Symptom::Healthy, -1));
    return out;
  }

  // 2. Work in units of the largest magnitude: no overflow, and every measure below is relative.
  double scale = 0;
  for (double v : y) scale = std::max(scale, std::fabs(v));
  if (!(scale > 0)) scale = 1.0;
  for (double& v : y) v /= scale;
  for (double& v : smoothed) v /= scale;

  const std::size_t c = std::clamp<std::size_t>(static_cast<std::size_t>(std::lround(config.chunk * static_cast<double>(m))), 1, m);
  const std::size_t c0 = std::min<std::size_t>(c, 10);
  const double first = mean_of(y.data(), c0);
  const double middle = mean_of(y.data() + (m - c) / 2, c);
  const double end = mean_of(y.data() + (m - c), c);
  // The range-test onset stands when the history also ended above where it began (see the top).
  if (has_scale && range_explosion >= 0 && end > first && (ev.explosion_step < 0 || range_explosion < ev.explosion_step))
    ev.explosion_step = range_explosion;
  push_exploding();
  const auto best_at = static_cast<std::size_t>(std::min_element(smoothed.begin(), smoothed.end()) - smoothed.begin());
  const double best = smoothed[best_at];
  ev.best_step = step_of[best_at];

  std::vector<double> scratch(m - 1);
  std::int64_t changes = 0;
  for (std::size_t i = 1; i < m; ++i) {
    const double d = y[i] - y[i - 1];
    scratch[i - 1] = std::fabs(d);
    if (i >= 2) {
      const double before = y[i - 1] - y[i - 2];
      changes += (d > 0 && before < 0) || (d < 0 && before > 0);
    }
  }
  ev.alternation = static_cast<double>(changes) / static_cast<double>(m - 2);
  const double median_step = median_of(scratch);
  const double noise = median_step / (0.6744897501960817 * std::sqrt(2.0));  // median |N(0, 2 sd^2)| = 0.674 sqrt(2) sd
  scratch.assign(y.begin(), y.end());
  for (double& v : scratch) v = std::fabs(v);
  ev.amplitude = median_step / std::max(median_of(scratch), 1e-300);

  const double first_scale = std::max(std::fabs(first), 1e-300);
  const double drop = first - end;
  const double drop_se = noise * std::sqrt(1.0 / static_cast<double>(c0) + 1.0 / static_cast<double>(c));
  ev.relative_drop = drop / first_scale;
  ev.progress = (first - best) / first_scale;
  ev.late_share = drop > 0 ? finite_or_nan((middle - end) / drop) : std::numeric_limits<double>::quiet_NaN();

  // Rise: the end level, less 3 standard errors, above the lowest upper confidence bound of the
  // smoothed loss (3 of its standard errors; the early debiased values are noisier).
  double lowest_bound = std::numeric_limits<double>::infinity();
  std::size_t lowest_at = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const double bound = smoothed[i] + 3.0 * noise * smoothed_sd(config.detector.beta, i + 1);
    if (bound < lowest_bound) {
      lowest_bound = bound;
      lowest_at = i;
    }
  }
  const double reached = smoothed[lowest_at];
  ev.rise = (end - reached) / std::max(std::fabs(reached), 1e-300);
  const bool rising = end - 3.0 * noise / std::sqrt(static_cast<double>(c)) > lowest_bound && ev.rise > config.rising &&
                      end - reached > config.rising * std::max(first - reached, 0.0);
  if (rising) ev.rise_step = step_of[lowest_at];

  // Worse than at the start. The step-0 loss is measured before any update: the level training
  // began from. An LR so large that the first steps throw the model off leaves a run whose loss
  // stays far above it in chaos; the noise it makes hides any trend from the tests above, but not
  // from this one: a typical (median) loss well above the start, and most losses above it.
  bool worse_than_start = false;
  if (m >= 20 && y[0] > 0) {
    scratch.assign(y.begin() + 1, y.end());
    ev.start_ratio = median_of(scratch) / y[0];
    std::size_t above = 0;
    for (std::size_t i = 1; i < m; ++i) above += y[i] > y[0];
    worse_than_start = ev.start_ratio >= config.worse_than_start && 4 * above >= 3 * (m - 1);
    if (worse_than_start && !rising) {
      std::size_t i = 1;
      while (i < m && y[i] < config.worse_than_start * y[0]) ++i;
      ev.rise_step = step_of[std::min(i, m - 1)];
    }
  }

  const std::size_t tail = std::min(m, std::max(static_cast<std::size_t>(config.detector.window),
                                                static_cast<std::size_t>(config.plateau_tail * static_cast<double>(m))));
  const double* tail_y = y.data() + (m - tail);
  const double tail_mean = mean_of(tail_y, tail);
  const double tail_level = std::max(std::fabs(tail_mean), 1e-300);
  double slope, slope_se;
  ols_slope(tail_y, tail, slope, slope_se);
  ev.tail_change = finite_or_nan(slope * static_cast<double>(tail) / tail_level);
  ev.tail_change_se = finite_or_nan(slope_se * static_cast<double>(tail) / tail_level);

  // 3. Symptoms (sorted into priority order at the end).
  if (ev.oscillation_fraction >= config.oscillation_fraction)
    found.push_back(make_finding(Symptom::Oscillating, ev.oscillation_step));

  const double spikes_needed = std::max(static_cast<double>(config.spike_count), config.spike_rate * static_cast<double>(m));
  if (static_cast<double>(ev.spikes) >= spikes_needed)
    found.push_back(make_finding(Symptom::Unstable, ev.first_spike));
  else if (rising || worse_than_start)
    found.push_back(make_finding(Symptom::Unstable, ev.rise_step));

  const bool no_progress = ev.relative_drop < config.no_progress || drop <= 3.0 * drop_se;
  if (no_progress) {
    if (!rising && !worse_than_start) found.push_back(make_finding(Symptom::NotDecreasing, 0));
  } else if (ev.late_share >= config.slow_late_share) {
    found.push_back(make_finding(Symptom::Slow, 0));
  } else if (!rising && !worse_than_start && ev.progress >= config.detector.plateau_progress &&
             std::fabs(ev.tail_change) < config.plateau_change + 2.0 * ev.tail_change_se) {
    // Where it began: the first step from which the mean of the next `w` losses is within the
    // tail's band (its relative tolerance, or 3 standard errors of such a mean).
    const std::size_t w = std::min<std::size_t>(tail, static_cast<std::size_t>(config.detector.window));
    const double band = std::max(config.plateau_change * tail_level, 3.0 * noise / std::sqrt(static_cast<double>(w)));
    double window_sum = 0;
    for (std::size_t i = 0; i < w; ++i) window_sum += y[i];
    std::size_t first_in = 0;
    while (first_in + w < m && window_sum / static_cast<double>(w) > tail_mean + band) {
      window_sum += y[first_in + w] - y[first_in];
      ++first_in;
    }
    ev.plateau_step = step_of[first_in];
    found.push_back(make_finding(Symptom::Plateau, ev.plateau_step));
  }
  if (found.empty()) found.push_back(make_finding(Symptom::Healthy, -1));
  std::stable_sort(found.begin(), found.end(),
                   [](const Finding& a, const Finding& b) { return static_cast<int>(a.code) < static_cast<int>(b.code); });

  ev.first = first * scale;
  ev.middle = middle * scale;
  ev.end = end * scale;
  ev.best = best * scale;
  ev.noise = std::min(noise * scale, std::numeric_limits<double>::max());  // differences of huge losses can exceed it
  ev.drop_se = drop_se / first_scale;  // relative, like relative_drop
  return out;
}

}  // namespace pylrcore
