// Streaming detection on a training-loss stream: fed one loss at a time, O(1) time per update and
// fixed memory (a few numbers and a ring of the last `window` losses), all of it checkpointable.
//
// Signals, each a bit of DetectFlag, reported with the step index:
//   NONFINITE    the loss is NaN or +-Inf. It is reported and never enters any statistic.
//   EXPLOSION    smoothed loss s > best + (k-1) * max(|best|, 1e-3 * |start|), best = lowest s from the
//                10th finite loss on (`start` = s there; earlier values average too few losses).
//                For best > 0 this is fastai's s > k*best (k = 4); it stays meaningful for best <= 0
//                (s must rise (k-1)*|best| above best) and for best = 0 (the floor uses the start level).
//   SPIKE        z = (loss - m) / sd > spike_z, with m a short EMA of the loss (spike_beta: a falling
//                trend must not look like deviation) and sd^2 a longer EMA (spike_var_beta) of the
//                squared one-step error (loss - m)^2. Both updates are winsorised at m +- spike_clip*sd,
//                so a spike moves them no more than a 3-sigma value would: the next spike is still seen.
//   PLATEAU      progress was made (best fell plateau_progress below start) and the trend over the
//                window is flat relative to the level: |rate| < plateau_rel + 2*se(rate).
//   OSCILLATION  differences alternate in sign at rate >= oscillation_alternation (i.i.d. noise
//                alternates 2/3 of the time) with mean |difference| >= oscillation_amplitude * level.
//   DECREASING   the trend falls by more than decrease_rel of the level per window, and significantly
//                (rate < -4*se(rate): over a long run, 3 standard errors are crossed by noise alone).
// The trend is the least-squares line through the last `window` (winsorised) losses, from running
// sums over a ring buffer (recomputed exactly once per lap, so rounding cannot accumulate); `rate`
// is its slope times `window` relative to the window's mean. A hard window, unlike an exponential
// one, forgets a past descent after `window` steps, so a plateau is seen within one window.
// Alternation and amplitude are EMAs with weight 1 - 1/window (warm-started as plain means).
// Window states (PLATEAU, OSCILLATION, DECREASING) have hysteresis, so noise near a threshold does
// not produce a stream of onsets: DECREASING is left when rate > -decrease_rel/2, PLATEAU when
// |rate| > 2*plateau_rel + 4*se, OSCILLATION when the alternation falls halfway back to 2/3 or the
// amplitude below half its threshold.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/detect_math.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

enum DetectFlag : std::uint32_t {
  kNonFinite = 1u << 0,
  kExplosion = 1u << 1,
  kSpike = 1u << 2,
  kPlateau = 1u << 3,
  kOscillation = 1u << 4,
  kDecreasing = 1u << 5,
};
inline constexpr Named<DetectFlag> kDetectFlagNames[] = {
    {kNonFinite, "NONFINITE"},     {kExplosion, "EXPLOSION"},     {kSpike, "SPIKE"},
    {kPlateau, "PLATEAU"},         {kOscillation, "OSCILLATION"}, {kDecreasing, "DECREASING"},
};
constexpr std::uint32_t kAllDetectFlags = (1u << 6) - 1;
// States that describe the statistics rather than the current loss: carried over a non-finite step.
constexpr std::uint32_t kPersistentFlags = kExplosion | kPlateau | kOscillation | kDecreasing;

struct DetectorConfig {
  double beta = 0.98;                      // loss smoothing (fastai's debiased EMA): level, best, explosion
  double explode_factor = 4.0;             // k of the explosion rule (fastai 4, torch-lr-finder 5)
  double spike_beta = 0.9;                 // weight of the mean the z-score is taken against (~10 steps)
  double spike_var_beta = 0.99;            // weight of the variance EMA (~100 steps)
  double spike_z = 6.0;                    // z-score above which a loss is a spike (OLMo/Levanter use 6)
  double spike_clip = 3.0;                 // winsorise the mean/variance updates at this many sd
  std::int64_t warmup = 50;                // finite losses before SPIKE and the window states can fire (>= 10 used)
  std::int64_t window = 100;               // horizon of the window statistics, in steps
  double plateau_rel = 0.01;               // |change per window| / level below this (+2 se): flat
  double plateau_progress = 0.1;           // ... and only once best <= (1 - this) * start
  double decrease_rel = 0.02;              // change per window / level below -this (and < -3 se): decreasing
  double oscillation_alternation = 0.85;   // sign-change rate of differences (noise: 2/3)
  double oscillation_amplitude = 0.01;     // mean |difference| / level; rules out numerically tiny wiggles
};

inline void validate(const DetectorConfig& c) {
  auto bad = [](const char* name, double value, const char* rule) {
    std::ostringstream s;
    s << name << " must be " << rule << ", got " << value;
    fail(s.str());
  };
  check_beta(c.beta, "beta");
  check_beta(c.spike_beta, "spike_beta");
  check_beta(c.spike_var_beta, "spike_var_beta");
  if (!(c.explode_factor > 1.0 && std::isfinite(c.explode_factor))) bad("explode_factor", c.explode_factor, "> 1 (e.g. 4)");
  if (!(c.spike_z > 0.0 && std::isfinite(c.spike_z))) bad("spike_z", c.spike_z, "a finite number > 0 (e.g. 6)");
  if (!(c.spike_clip > 0.0 && c.spike_clip <= c.spike_z))
    bad("spike_clip", c.spike_clip, "in (0, spike_z]: a spike must not move the statistics more than a clipped value");
  if (c.warmup < 0) bad("warmup", static_cast<double>(c.warmup), ">= 0");
  if (c.window < 2) bad("window", static_cast<double>(c.window), ">= 2");
  // the ring holds `window` doubles: refuse a size that cannot be allocated instead of bad_alloc
  if (c.window > 10'000'000) bad("window", static_cast<double>(c.window), "<= 10,000,000 (a ring of that many losses)");
  if (c.warmup > (std::int64_t{1} << 62)) bad("warmup", static_cast<double>(c.warmup), "<= 2**62");
  if (!(c.plateau_rel > 0.0 && c.plateau_rel < 1.0)) bad("plateau_rel", c.plateau_rel, "in (0, 1) (e.g. 0.01)");
  if (!(c.plateau_progress >= 0.0 && c.plateau_progress < 1.0))
    bad("plateau_progress", c.plateau_progress, "in [0, 1) (e.g. 0.1)");
  if (!(c.decrease_rel > c.plateau_rel && c.decrease_rel < 1.0))
    bad("decrease_rel", c.decrease_rel, "in (plateau_rel, 1) so that flat and decreasing cannot overlap");
  if (!(c.oscillation_alternation > 2.0 / 3.0 && c.oscillation_alternation <= 1.0))
    bad("oscillation_alternation", c.oscillation_alternation,
        "in (2/3, 1]: i.i.d. noise already alternates 2/3 of the time (e.g. 0.85)");
  if (!(c.oscillation_amplitude > 0.0 && std::isfinite(c.oscillation_amplitude)))
    bad("oscillation_amplitude", c.oscillation_amplitude, "a finite number > 0 (e.g. 0.01)");
}

// Calls f(name, field) for every setting: one list of names for bindings and checkpoints.
template <class F>
void for_each_field(DetectorConfig& c, F&& f) {
  f("beta", c.beta);
  f("explode_factor", c.explode_factor);
  f("spike_beta", c.spike_beta);
  f("spike_var_beta", c.spike_var_beta);
  f("spike_z", c.spike_z);
  f("spike_clip", c.spike_clip);
  f("warmup", c.warmup);
  f("window", c.window);
  f("plateau_rel", c.plateau_rel);
  f("plateau_progress", c.plateau_progress);
  f("decrease_rel", c.decrease_rel);
  f("oscillation_alternation", c.oscillation_alternation);
  f("oscillation_amplitude", c.oscillation_amplitude);
}

// Everything needed to resume a stream exactly.
struct DetectorState {
  std::int64_t step = 0;  // losses seen, finite or not: the step index of the next one
  EmaState smooth{};      // debiased EMA of the finite losses (its count = finite losses seen)
  double best = std::numeric_limits<double>::quiet_NaN();   // lowest smoothed value
  double start = std::numeric_limits<double>::quiet_NaN();  // smoothed value after the first 10 finite losses
  double mean = 0, var = 0;                                  // z-score: short EMA mean, EMA squared error
  double last = std::numeric_limits<double>::quiet_NaN();    // last finite loss
  double last_diff = 0;                                      // last difference of finite losses
  double alternation = 0;                                    // EMA of "the difference changed sign"
  double amplitude = 0;                                      // EMA of |difference|
  std::vector<double> ring;        // last `window` winsorised losses; finite loss number i is in slot i % window
  double ring_sum = 0, ring_sumsq = 0, ring_moment = 0;  // sums of x, x^2, j*x (j = 0 for the oldest)
  std::uint32_t flags = 0;         // state after the last update
};

template <class F>
void for_each_field(DetectorState& s, F&& f) {
  f("step", s.step);
  f("smooth_average", s.smooth.average);
  f("smooth_beta_power", s.smooth.beta_power);
  f("smooth_count", s.smooth.count);
  f("smooth_last", s.smooth.last);
  f("best", s.best);
  f("start", s.start);
  f("mean", s.mean);
  f("var", s.var);
  f("last", s.last);
  f("last_diff", s.last_diff);
  f("alternation", s.alternation);
  f("amplitude", s.amplitude);
  f("ring", s.ring);
  f("ring_sum", s.ring_sum);
  f("ring_sumsq", s.ring_sumsq);
  f("ring_moment", s.ring_moment);
  f("flags", s.flags);
}

struct Verdict {
  std::int64_t step = 0;
  std::uint32_t flags = 0;  // states holding at this step
  std::uint32_t onset = 0;  // states that began at this step
  double smoothed = 0;      // smoothed loss (the last finite one's for a non-finite loss)
  double best = 0;          // lowest smoothed loss so far
  double zscore = 0;        // of this loss against the running mean/sd; NaN for a non-finite loss
};

// Window statistics at the current step, for logs and events.
struct DetectorStats {
  double rate = 0;         // trend change per window, relative to the level
  double rate_se = 0;      // its standard error
  double alternation = 0;  // sign-change rate of the differences
  double amplitude = 0;    // mean |difference| relative to the level
  double progress = 0;     // (start - best) / |start|
  double explode_at = 0;   // smoothed value at which EXPLOSION fires
};

template <class F>
void for_each_field(DetectorStats& s, F&& f) {
  f("rate", s.rate);
  f("rate_se", s.rate_se);
  f("alternation", s.alternation);
  f("amplitude", s.amplitude);
  f("progress", s.progress);
  f("explode_at", s.explode_at);
}

class Detector {
 public:
  // (detect_math.hpp holds the per-value arithmetic, shared with the device guard.)
  static constexpr std::int64_t kStartPoints = detect_math::kStartPoints;
  static constexpr double kScaleFloor = detect_math::kScaleFloor;
  static constexpr double kHuge = detect_math::kHuge;
  static constexpr double kMaxZ = detect_math::kMaxZ;

  explicit Detector(const DetectorConfig& config = DetectorConfig{})
      : config_(config), smooth_(config.beta, EmaKind::Debiased), window_alpha_(1.0 / static_cast<double>(config.window)) {
    validate(config_);
    state_.ring.assign(static_cast<std::size_t>(config_.window), 0.0);
  }

  const DetectorConfig& config() const { return config_; }
  // (The smoothing lives in smooth_, which reuses Ema; state_.smooth is filled in only here.)
  DetectorState state() const {
    DetectorState s = state_;
    s.smooth = smooth_.state();
    return s;
  }
  void set_state(const DetectorState& s) {
    require(s.step >= s.smooth.count, "state: step must be >= the number of finite losses");
    require((s.flags & ~kAllDetectFlags) == 0, "state: flags has unknown bits");
    require(s.var >= 0 && s.amplitude >= 0 && s.alternation >= 0 && s.alternation <= 1,
            "state: var, amplitude must be >= 0 and alternation in [0, 1]");
    if (s.ring.size() != static_cast<std::size_t>(config_.window)) {
      std::ostringstream m;
      m << "state: ring has " << s.ring.size() << " values but window is " << config_.window;
      fail(m.str());
    }
    smooth_.set_state(s.smooth);
    state_ = s;
  }
  void reset() {
    state_ = DetectorState{};
    state_.ring.assign(static_cast<std::size_t>(config_.window), 0.0);
    smooth_.reset();
  }
  std::int64_t step() const { return state_.step; }
  std::int64_t finite_count() const { return smooth_.count(); }
  // Past the warm-up: SPIKE and the window states can fire, and spikes are winsorised. z-scores need
  // a variance from a few errors, so this takes at least kStartPoints losses whatever `warmup` says.
  bool warm() const { return detect_math::is_warm(finite_count(), config_.warmup); }

  Verdict update(double loss) {
    Verdict v;
    v.step = state_.step++;
    const std::uint32_t previous = state_.flags;
    if (!std::isfinite(loss)) {
      v.flags = (previous & kPersistentFlags) | kNonFinite;
      v.onset = v.flags & ~previous;
      v.smoothed = smooth_.value();
      v.best = state_.best;
      v.zscore = std::numeric_limits<double>::quiet_NaN();
      state_.flags = v.flags;
      return v;
    }
    const double s = smooth_.update(loss);
    const std::int64_t n = smooth_.count();
    // The first smoothed values average only a few losses: `best` starts from the 10th (a lucky
    // low first loss would otherwise make an ordinary one look like an explosion).
    if (n <= kStartPoints) state_.start = state_.best = s;
    else if (s < state_.best) state_.best = s;
    const bool warm = this->warm();

    std::uint32_t flags = 0;
    if (s > explode_threshold()) flags |= kExplosion;

    const detect_math::SpikeStep spike =
        detect_math::spike_step(state_.mean, state_.var, loss, n, warm, config_.spike_z, config_.spike_clip,
                                config_.spike_beta, config_.spike_var_beta);
    if (spike.spike) flags |= kSpike;
    const double z = spike.zscore, clipped = spike.clipped;
    update_differences(loss, n);
    update_ring(clipped, n);
    state_.last = loss;

    if (warm) flags |= window_states(previous);
    v.flags = flags;
    v.onset = flags & ~previous;
    v.smoothed = s;
    v.best = state_.best;
    v.zscore = z;
    state_.flags = flags;
    return v;
  }

  DetectorStats stats() const {
    DetectorStats st;
    const double level = this->level();
    trend_rate(level, st.rate, st.rate_se);
    st.alternation = state_.alternation;
    st.amplitude = state_.amplitude / level;
    st.progress = progress();
    st.explode_at = explode_threshold();
    return st;
  }

  // The statistic and the threshold that made `flag` begin, for an event log.
  void evidence(DetectFlag flag, double loss, const Verdict& v, double& value, double& threshold) const {
    const DetectorStats st = stats();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    switch (flag) {
      case kNonFinite: value = loss; threshold = nan; return;
      case kExplosion: value = v.smoothed; threshold = st.explode_at; return;
      case kSpike: value = v.zscore; threshold = config_.spike_z; return;
      case kPlateau: value = st.rate; threshold = config_.plateau_rel; return;
      case kOscillation: value = st.alternation; threshold = config_.oscillation_alternation; return;
      case kDecreasing: value = st.rate; threshold = -config_.decrease_rel; return;
    }
    value = threshold = nan;
  }

  // The smoothed value at which EXPLOSION fires now (stats().explode_at without the window statistics).
  double explode_threshold() const {
    return detect_math::explode_threshold(state_.best, state_.start, config_.explode_factor);
  }

 private:
  // The loss level that relative measures divide by: |mean| of the ring, but at least 1e-3 of its
  // root mean square (losses around zero) and 1e-150 (no ratio can overflow).
  double level() const {
    const std::int64_t filled = std::min<std::int64_t>(smooth_.count(), config_.window);
    if (filled == 0) return 1.0;
    const double k = static_cast<double>(filled);
    return std::max({std::fabs(state_.ring_sum / k), kScaleFloor * std::sqrt(state_.ring_sumsq / k), 1e-150});
  }
  double progress() const {
    const double start = state_.start;
    if (!(std::fabs(start) > 0.0)) return 0.0;
    return (start - state_.best) / std::fabs(start);
  }
  void update_differences(double x, std::int64_t n) {
    if (n < 2) return;
    const double diff = std::clamp(x - state_.last, -kHuge, kHuge);
    state_.amplitude += std::max(window_alpha_, 1.0 / static_cast<double>(n - 1)) * (std::fabs(diff) - state_.amplitude);
    if (n >= 3) {
      const double changed = (diff > 0 && state_.last_diff < 0) || (diff < 0 && state_.last_diff > 0) ? 1.0 : 0.0;
      state_.alternation += std::max(window_alpha_, 1.0 / static_cast<double>(n - 2)) * (changed - state_.alternation);
    }
    state_.last_diff = diff;
  }

  // Puts the n-th finite loss into the ring and updates the sums; j counts from the oldest value.
  void update_ring(double x, std::int64_t n) {
    const auto window = static_cast<std::size_t>(config_.window);
    const std::size_t slot = static_cast<std::size_t>(n - 1) % window;
    x = std::clamp(x, -kHuge, kHuge);
    if (static_cast<std::size_t>(n) <= window) {
      state_.ring_moment += static_cast<double>(n - 1) * x;
    } else {
      const double oldest = state_.ring[slot];
      state_.ring_sum -= oldest;
      state_.ring_sumsq -= oldest * oldest;
      state_.ring_moment -= state_.ring_sum;  // every remaining j drops by one
      state_.ring_moment += static_cast<double>(window - 1) * x;
    }
    state_.ring_sum += x;
    state_.ring_sumsq += x * x;
    state_.ring[slot] = x;
    if (slot == window - 1) {  // a full lap: the oldest is in slot 0; recompute the sums exactly
      double sum = 0, sumsq = 0, moment = 0;
      for (std::size_t j = 0; j < window; ++j) {
        const double v = state_.ring[j];
        sum += v;
        sumsq += v * v;
        moment += static_cast<double>(j) * v;
      }
      state_.ring_sum = sum;
      state_.ring_sumsq = sumsq;
      state_.ring_moment = moment;
    }
  }

  // Least-squares slope over the ring, as change per window relative to `level`, and its standard error.
  void trend_rate(double level, double& rate, double& se) const {
    rate = se = 0.0;
    const std::int64_t filled = std::min<std::int64_t>(smooth_.count(), config_.window);
    if (filled < 3) return;
    const double k = static_cast<double>(filled);
    const double j_mean = 0.5 * (k - 1.0);
    const double stt = k * (k * k - 1.0) / 12.0;
    const double slope = (state_.ring_moment - j_mean * state_.ring_sum) / stt;
    const double resid =
        std::max(state_.ring_sumsq - state_.ring_sum * state_.ring_sum / k - slope * slope * stt, 0.0) / (k - 2.0);
    const double scale = static_cast<double>(config_.window) / level;
    rate = slope * scale;
    se = std::sqrt(resid / stt) * scale;
    if (!std::isfinite(rate) || !std::isfinite(se)) rate = se = 0.0;
  }

  std::uint32_t window_states(std::uint32_t previous) const {
    const double level = this->level();
    double rate, se;
    trend_rate(level, rate, se);
    std::uint32_t flags = 0;

    const double dec = config_.decrease_rel;
    const bool was_decreasing = previous & kDecreasing;
    if (was_decreasing ? rate < -0.5 * dec : (rate < -dec && rate < -4.0 * se)) flags |= kDecreasing;

    const double flat = config_.plateau_rel;
    const bool was_plateau = previous & kPlateau;
    const bool flat_now = was_plateau ? std::fabs(rate) <= 2.0 * flat + 4.0 * se : std::fabs(rate) < flat + 2.0 * se;
    if (!(flags & kDecreasing) && flat_now && progress() >= config_.plateau_progress) flags |= kPlateau;

    const double alt_on = config_.oscillation_alternation;
    const double amp_on = config_.oscillation_amplitude;
    const double amplitude = state_.amplitude / level;
    const bool was_oscillating = previous & kOscillation;
    const bool oscillating =
        was_oscillating ? state_.alternation >= 0.5 * (alt_on + 2.0 / 3.0) && amplitude >= 0.5 * amp_on
                        : state_.alternation >= alt_on && amplitude >= amp_on;
    if (oscillating) flags |= kOscillation;
    return flags;
  }

  DetectorConfig config_;
  Ema smooth_;
  double window_alpha_;
  DetectorState state_{};
};

// One onset, for an event log: which state began, at which step, and the statistic that crossed
// its threshold (the loss for NONFINITE, the smoothed loss for EXPLOSION, the z-score for SPIKE,
// the relative rate for PLATEAU/DECREASING, the alternation rate for OSCILLATION).
struct DetectEvent {
  std::int64_t step = 0;
  DetectFlag kind = kNonFinite;
  double value = 0, threshold = 0;
};

// Calls push(DetectEvent) for each state that began at `v` (right after the update that made `v`).
template <class Push>
void for_each_onset(const Detector& detector, double loss, const Verdict& v, Push&& push) {
  for (std::uint32_t bit = 1; bit <= kAllDetectFlags; bit <<= 1) {
    if (!(v.onset & bit)) continue;
    DetectEvent e;
    e.step = v.step;
    e.kind = static_cast<DetectFlag>(bit);
    detector.evidence(e.kind, loss, v, e.value, e.threshold);
    push(e);
  }
}

// A Detector with a bounded log of its onsets (the most recent `max_events` kept, the others
// counted as dropped): what pylrcore.Detector holds. Logged here, in C++, so that an update stays
// a single native call per step.
class LoggedDetector {
 public:
  LoggedDetector(const DetectorConfig& config, std::size_t max_events) : core(config), max_events_(max_events) {}

  Verdict update(double loss) {
    const Verdict v = core.update(loss);
    if (v.onset) record(loss, v);
    return v;
  }
  // update() for n losses, the verdicts stored as columns (each of n entries).
  struct Columns {
    std::uint32_t *flags, *onset;
    double *smoothed, *best, *zscore;
  };
  void update(const double* losses, std::size_t n, const Columns& out) {
    for (std::size_t i = 0; i < n; ++i) {
      const Verdict v = update(losses[i]);
      out.flags[i] = v.flags;
      out.onset[i] = v.onset;
      out.smoothed[i] = v.smoothed;
      out.best[i] = v.best;
      out.zscore[i] = v.zscore;
    }
  }
  void reset() {
    core.reset();
    events_.clear();
    dropped_ = 0;
  }
  // A checkpoint's state and log: all validated before anything changes (an event's kind must be
  // one flag); a log longer than max_events keeps its most recent ones.
  void set_state(const DetectorState& state, std::deque<DetectEvent> log, std::int64_t dropped) {
    for (const DetectEvent& e : log) {
      const auto kind = static_cast<std::uint32_t>(e.kind);
      if (kind == 0 || (kind & (kind - 1)) != 0 || (kind & ~kAllDetectFlags) != 0) {
        std::ostringstream m;
        m << "state: an event's kind must be a single Flag, got " << kind;
        fail(m.str());
      }
    }
    while (log.size() > max_events_) log.pop_front();
    core.set_state(state);  // validates; throws before anything is changed
    events_ = std::move(log);
    dropped_ = dropped;
  }

  const std::deque<DetectEvent>& events() const { return events_; }
  std::size_t max_events() const { return max_events_; }
  std::int64_t dropped() const { return dropped_; }

  Detector core;

 private:
  void record(double loss, const Verdict& v) {
    for_each_onset(core, loss, v, [&](const DetectEvent& e) {
      if (max_events_ == 0) {
        ++dropped_;
        return;
      }
      if (events_.size() == max_events_) {
        events_.pop_front();
        ++dropped_;
      }
      events_.push_back(e);
    });
  }

  std::size_t max_events_;
  std::deque<DetectEvent> events_;
  std::int64_t dropped_ = 0;
};

}  // namespace pylrcore
