#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/diagnosis.hpp"

using namespace pylrcore;

namespace {

std::vector<double> curve(std::size_t n, double rel_sd, unsigned seed, double (*shape)(double)) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = shape(static_cast<double>(i)) * (1.0 + rel_sd * normal(gen));
  return x;
}

Symptom code_of(const std::vector<double>& x) { return diagnose(x.data(), x.size()).findings.at(0).code; }

}  // namespace

TEST(diagnose_each_row_of_the_symptom_table) {
  // Converging exponential, still clearly falling at the end: healthy.
  CHECK(code_of(curve(2000, 0.02, 1, [](double t) { return 0.5 + 2.0 * std::exp(-t / 700.0); })) == Symptom::Healthy);
  // Flat: not decreasing.
  CHECK(code_of(curve(2000, 0.02, 2, [](double) { return 2.3; })) == Symptom::NotDecreasing);
  // A straight, slow descent: slow.
  CHECK(code_of(curve(2000, 0.02, 3, [](double t) { return 2.3 - 0.3 * t / 2000.0; })) == Symptom::Slow);
  // Fast drop, then flat: plateau, starting where the drop ends.
  const auto p = curve(2000, 0.02, 4, [](double t) { return 0.3 + 2.0 * std::exp(-t / 50.0); });
  const Diagnosis d = diagnose(p.data(), p.size());
  CHECK(d.findings[0].code == Symptom::Plateau && d.findings[0].step > 100 && d.findings[0].step < 500);
  // Period-2 oscillation from step 500.
  auto o = curve(2000, 0.005, 5, [](double t) { return 0.5 + 1.5 * std::exp(-t / 100.0); });
  for (std::size_t i = 500; i < o.size(); ++i) o[i] += i % 2 ? 0.05 : -0.05;
  const Diagnosis od = diagnose(o.data(), o.size());
  CHECK(od.findings[0].code == Symptom::Oscillating && od.findings[0].step >= 500 && od.findings[0].step < 700);
  // Spikes on a healthy descent: unstable.
  auto s = curve(2000, 0.02, 6, [](double t) { return 0.5 + 2.0 * std::exp(-t / 700.0); });
  for (std::size_t i : {600u, 900u, 1200u, 1500u}) s[i] *= 2.0;
  const Diagnosis sd = diagnose(s.data(), s.size());
  CHECK(sd.findings[0].code == Symptom::Unstable && sd.findings[0].step == 600 && sd.evidence.spikes == 4);
  // NaN after a decrease: exploding at the NaN.
  auto e = curve(500, 0.02, 7, [](double t) { return 2.0 - t / 1000.0; });
  e[321] = std::numeric_limits<double>::quiet_NaN();
  const Diagnosis ed = diagnose(e.data(), e.size());
  CHECK(ed.findings[0].code == Symptom::Exploding && ed.findings[0].step == 321 && ed.evidence.nonfinite == 1);
  CHECK(ed.findings[0].factor_lo == 0.01 && ed.findings[0].factor_hi == 0.01);
}

TEST(diagnose_rising_loss_is_unstable_not_too_small) {
  // Falls, then climbs back 60% without reaching 4x: LR too high, never "increase it".
  const auto x = curve(1000, 0.01, 8, [](double t) { return t < 300 ? 2.0 - t / 300.0 : 1.0 + 0.6 * (t - 300) / 700.0; });
  const Diagnosis d = diagnose(x.data(), x.size());
  CHECK(d.findings[0].code == Symptom::Unstable);
  for (const Finding& f : d.findings) CHECK(f.code != Symptom::NotDecreasing && f.code != Symptom::Slow);
}

TEST(diagnose_priority_order_and_secondary_findings) {
  // Oscillating and, later, NaN: exploding first, oscillating second.
  auto x = curve(1500, 0.005, 9, [](double) { return 1.0; });
  for (std::size_t i = 200; i < x.size(); ++i) x[i] += i % 2 ? 0.1 : -0.1;
  x[1400] = std::numeric_limits<double>::infinity();
  const Diagnosis d = diagnose(x.data(), x.size());
  CHECK(d.findings.size() >= 2 && d.findings[0].code == Symptom::Exploding && d.findings[1].code == Symptom::Oscillating);
  for (std::size_t i = 1; i < d.findings.size(); ++i)
    CHECK(static_cast<int>(d.findings[i - 1].code) < static_cast<int>(d.findings[i].code));
}

TEST(diagnose_exploding_to_huge_values_stays_finite) {
  std::vector<double> x;
  for (int i = 0; i < 200; ++i) x.push_back(std::pow(10.0, 1.5 * i));  // up to 1e298, no inf
  const Diagnosis d = diagnose(x.data(), x.size());
  CHECK(d.findings[0].code == Symptom::Exploding);
  CHECK(std::isfinite(d.evidence.tail_change) && std::isfinite(d.evidence.tail_change_se));
  CHECK(std::isfinite(d.evidence.noise) && std::isfinite(d.evidence.end));
}

TEST(diagnose_rejects_short_history_and_bad_thresholds) {
  std::vector<double> x(9, 1.0);
  CHECK_THROWS(diagnose(x.data(), x.size()), std::invalid_argument);
  x.resize(100, 1.0);
  DiagnoseConfig c;
  c.chunk = 0.5;
  CHECK_THROWS(diagnose(x.data(), x.size(), c), std::invalid_argument);
  c = DiagnoseConfig{};
  c.spike_count = 0;
  CHECK_THROWS(diagnose(x.data(), x.size(), c), std::invalid_argument);
  c = DiagnoseConfig{};
  c.detector.beta = 1.0;
  CHECK_THROWS(diagnose(x.data(), x.size(), c), std::invalid_argument);
}

TEST(diagnose_all_nonfinite_is_exploding_at_zero) {
  std::vector<double> x(20, std::numeric_limits<double>::quiet_NaN());
  const Diagnosis d = diagnose(x.data(), x.size());
  CHECK(d.findings.size() == 1 && d.findings[0].code == Symptom::Exploding && d.findings[0].step == 0);
}
