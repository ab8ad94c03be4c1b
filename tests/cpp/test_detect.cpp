#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/detect.hpp"

using namespace pylrcore;

namespace {

// Deterministic noise for the tests (the distribution's exact draws do not matter, only that they repeat).
std::vector<double> noisy(std::size_t n, double level, double rel_sd, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(n);
  for (auto& v : x) v = level * (1.0 + rel_sd * normal(gen));
  return x;
}

std::vector<Verdict> run(Detector& d, const std::vector<double>& x) {
  std::vector<Verdict> out;
  for (double v : x) out.push_back(d.update(v));
  return out;
}

std::vector<std::int64_t> onsets(const std::vector<Verdict>& vs, std::uint32_t flag) {
  std::vector<std::int64_t> steps;
  for (const auto& v : vs)
    if (v.onset & flag) steps.push_back(v.step);
  return steps;
}

}  // namespace

TEST(detect_nonfinite_is_reported_and_skipped) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Detector with_bad, clean;
  const std::vector<double> x{3.0, 2.5, 2.7, 2.2, 2.4};
  for (std::size_t i = 0; i < x.size(); ++i) {
    clean.update(x[i]);
    with_bad.update(x[i]);
    if (i == 2) {
      const Verdict a = with_bad.update(nan);
      CHECK(a.flags == kNonFinite && a.onset == kNonFinite && a.step == 3);
      CHECK(std::isnan(a.zscore) && a.smoothed == clean.state().smooth.last);
      const Verdict b = with_bad.update(-inf);
      CHECK(b.flags == kNonFinite && b.onset == 0);  // still non-finite: no new onset
    }
  }
  // Same statistics as if the bad values had never come; only the step count differs.
  DetectorState a = with_bad.state(), b = clean.state();
  CHECK(a.step == b.step + 2);
  CHECK(a.smooth.average == b.smooth.average && a.mean == b.mean && a.var == b.var);
  CHECK(a.ring_sum == b.ring_sum && a.ring_moment == b.ring_moment && a.best == b.best);
  const Verdict after = with_bad.update(2.0);
  CHECK(after.flags == clean.update(2.0).flags && !(after.flags & kNonFinite));
}

TEST(detect_explosion_matches_fastai_rule_for_positive_losses) {
  Detector d;  // k = 4
  std::vector<double> x(100, 1.0);
  for (int i = 0; i < 100; ++i) x.push_back(std::exp(0.05 * i));
  Ema smooth(0.98, EmaKind::Debiased);
  double best = 0;
  std::int64_t expected = -1;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double s = smooth.update(x[i]);
    if (i < 10) best = s;
    else best = std::min(best, s);
    if (expected < 0 && s > 4.0 * best) expected = static_cast<std::int64_t>(i);
  }
  const auto steps = onsets(run(d, x), kExplosion);
  CHECK(steps.size() == 1 && expected > 100 && steps[0] == expected);
}

TEST(detect_explosion_rule_for_negative_and_zero_best) {
  DetectorConfig c;
  c.warmup = 0;
  Detector d(c);
  for (int i = 0; i < 20; ++i) d.update(-1.0);  // best = -1: fires above -1 + 3 * 1 = 2
  CHECK(!(d.update(1.5).flags & kExplosion));
  bool fired = false;
  for (int i = 0; i < 200 && !fired; ++i) fired = d.update(10.0).flags & kExplosion;
  CHECK(fired);
  CHECK_CLOSE(d.stats().explode_at, 2.0, 1e-12);

  Detector zero(c);  // best = 0 with a start of 1: the margin floor is 3 * 1e-3
  for (int i = 0; i < 10; ++i) zero.update(1.0);
  for (int i = 0; i < 2000; ++i) zero.update(0.0);
  CHECK(!(zero.update(0.0).flags & kExplosion));
  CHECK(std::fabs(zero.stats().explode_at - 3e-3) < 1e-9);
}

TEST(detect_spike_train_each_spike_seen) {
  auto x = noisy(3000, 1.0, 0.05, 1);
  const std::vector<std::int64_t> spikes{300, 302, 304, 1000, 1001, 2500};
  for (auto i : spikes) x[static_cast<std::size_t>(i)] *= 1.6;  // 12 sd
  Detector d;
  std::vector<std::int64_t> flagged;
  for (const auto& v : run(d, x))
    if (v.flags & kSpike) flagged.push_back(v.step);
  CHECK(flagged == spikes);
}

TEST(detect_spike_seen_on_a_falling_trend) {
  // The short mean follows the trend, so the spike is measured against the noise, not the descent.
  std::vector<double> x = noisy(1500, 1.0, 0.02, 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] *= 0.2 + 2.0 * std::exp(-static_cast<double>(i) / 300.0);
  x[400] *= 1.5;
  Detector d;
  const auto steps = onsets(run(d, x), kSpike);
  CHECK(steps.size() == 1 && steps[0] == 400);
}

TEST(detect_no_oscillation_or_spike_on_gaussian_noise) {
  Detector d;
  std::uint32_t seen = 0;
  for (const auto& v : run(d, noisy(50000, 2.0, 0.1, 3))) seen |= v.flags;
  CHECK(!(seen & (kOscillation | kSpike | kExplosion)));
}

TEST(detect_oscillation_onset_within_a_window) {
  auto x = noisy(2000, 1.0, 0.01, 4);
  for (std::size_t i = 1000; i < x.size(); ++i) x[i] += (i % 2 ? 0.1 : -0.1);
  Detector d;
  const auto steps = onsets(run(d, x), kOscillation);
  CHECK(steps.size() == 1 && steps[0] >= 1000 && steps[0] <= 1000 + d.config().window);
}

TEST(detect_plateau_after_descent_and_decreasing_before) {
  auto x = noisy(3000, 1.0, 0.02, 5);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] *= i < 1500 ? 2.0 - 1.8 * static_cast<double>(i) / 1500.0 : 0.2;
  Detector d;
  const auto vs = run(d, x);
  const auto plateau = onsets(vs, kPlateau);
  CHECK(!plateau.empty() && plateau[0] >= 1500 && plateau[0] <= 1500 + d.config().window);
  const auto decreasing = onsets(vs, kDecreasing);
  CHECK(!decreasing.empty() && decreasing[0] <= 2 * d.config().warmup);
  CHECK(vs[1000].flags & kDecreasing);
  CHECK((vs.back().flags & kPlateau) && !(vs.back().flags & kDecreasing));
}

TEST(detect_no_plateau_without_progress) {
  Detector d;
  std::uint32_t seen = 0;
  for (const auto& v : run(d, std::vector<double>(2000, 3.0))) seen |= v.flags;
  CHECK(seen == 0);
}

TEST(detect_state_round_trip_resumes_identically) {
  auto x = noisy(1500, 1.0, 0.1, 6);
  Detector a;
  for (std::size_t i = 0; i < 777; ++i) a.update(x[i]);
  Detector b;
  b.set_state(a.state());
  for (std::size_t i = 777; i < x.size(); ++i) {
    const Verdict va = a.update(x[i]), vb = b.update(x[i]);
    CHECK(va.step == vb.step && va.flags == vb.flags && va.onset == vb.onset);
    CHECK(va.smoothed == vb.smoothed && va.zscore == vb.zscore && va.best == vb.best);
  }
  a.reset();
  CHECK(a.step() == 0 && a.finite_count() == 0 && a.state().ring_sum == 0);
}

TEST(detect_ring_sums_stay_exact_over_many_laps) {
  Detector d;
  const auto x = noisy(100003, 1e3, 0.3, 7);
  for (double v : x) d.update(v);
  const DetectorState s = d.state();
  double sum = 0;
  for (double v : s.ring) sum += v;
  CHECK_CLOSE(s.ring_sum, sum, 1e-12);
}

TEST(detect_rejects_bad_config_and_state) {
  DetectorConfig c;
  c.window = 1;
  CHECK_THROWS(Detector{c}, std::invalid_argument);
  c = DetectorConfig{};
  c.oscillation_alternation = 0.6;  // below the 2/3 of noise
  CHECK_THROWS(Detector{c}, std::invalid_argument);
  c = DetectorConfig{};
  c.decrease_rel = c.plateau_rel;
  CHECK_THROWS(Detector{c}, std::invalid_argument);
  c = DetectorConfig{};
  c.spike_clip = c.spike_z + 1;
  CHECK_THROWS(Detector{c}, std::invalid_argument);
  Detector d;
  DetectorState s = d.state();
  s.ring.resize(3);
  CHECK_THROWS(d.set_state(s), std::invalid_argument);
}

TEST(detect_huge_finite_losses_give_finite_outputs) {
  Detector d;
  for (int i = 0; i < 300; ++i) {
    const Verdict v = d.update(i % 3 ? 1e300 : -1e300);
    CHECK(std::isfinite(v.smoothed) && std::isfinite(v.zscore) && std::isfinite(v.best));
  }
  const DetectorStats st = d.stats();
  CHECK(std::isfinite(st.rate) && std::isfinite(st.rate_se) && std::isfinite(st.amplitude));
}

TEST(detect_events_carry_value_and_threshold) {
  auto x = noisy(200, 1.0, 0.05, 8);
  x[150] = 5.0;
  Detector d;
  std::vector<DetectEvent> events;
  for (double v : x) for_each_onset(d, v, d.update(v), [&](const DetectEvent& e) { events.push_back(e); });
  CHECK(events.size() == 1 && events[0].kind == kSpike && events[0].step == 150);
  CHECK(events[0].value > events[0].threshold && events[0].threshold == 6.0);
}
