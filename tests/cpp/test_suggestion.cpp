#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/suggestion.hpp"

using namespace pylrcore;

namespace {

struct Curve {
  std::vector<double> lrs, losses;
};

// Logistic fall centred on lr = 1e-3 in log10 space, quadratic rise past 0.1.
Curve valley_curve(std::size_t n) {
  Curve c;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = -6.0 + 7.0 * static_cast<double>(i) / static_cast<double>(n - 1);
    c.lrs.push_back(std::pow(10.0, x));
    double loss = 2.3 - 1.8 / (1.0 + std::exp(-(x + 3.0) / 0.5));
    if (x > -1.0) loss += 8.0 * (x + 1.0) * (x + 1.0);
    c.losses.push_back(loss);
  }
  return c;
}

Suggestion run(const Curve& c, Method m) {
  SuggestOptions o;
  o.method = m;
  return suggest(c.lrs.data(), c.losses.data(), c.lrs.size(), o);
}

}  // namespace

TEST(suggest_steepest_near_true_centre_with_zone_around_it) {
  Curve c = valley_curve(200);
  Suggestion s = run(c, Method::Steepest);
  CHECK(s.status == SuggestStatus::Ok);
  CHECK(std::fabs(std::log10(s.lr) + 3.0) < 0.06);
  CHECK(c.lrs[s.zone_lo_index] < 1e-3 && c.lrs[s.zone_hi_index] > 1e-3);
  CHECK(s.diverged_index > 0 && c.lrs[s.diverged_index] > 0.1);
  CHECK(s.smoothed.size() == c.lrs.size() && s.slope.size() == c.lrs.size());
}

TEST(divergence_predicate_is_k_times_best_for_positive_best_and_additive_below) {
  CHECK(divergence_threshold(2.0, 4.0) == 8.0);
  CHECK(divergence_threshold(-2.0, 4.0) == 4.0);
  CHECK(!diverged(8.0, 2.0, 4.0) && diverged(8.000001, 2.0, 4.0));
  CHECK(!diverged(-1.0, -2.0, 4.0));  // k x best = -8 would call a rise from -2 to -1 a divergence
}

TEST(suggest_capped_is_the_smaller_of_steepest_and_minimum_over_10) {
  for (std::size_t n : {60, 200, 1000}) {
    Curve c = valley_curve(n);
    const Suggestion steep = run(c, Method::Steepest), minimum = run(c, Method::Minimum), capped = run(c, Method::Capped);
    CHECK(capped.status == SuggestStatus::Ok && !capped.low_confidence);
    CHECK(capped.lr == std::min(steep.lr, minimum.lr));
    CHECK(capped.zone_lo_index == steep.zone_lo_index && capped.zone_hi_index == steep.zone_hi_index);
  }
}

TEST(suggest_every_method_answers_on_a_valley) {
  Curve c = valley_curve(120);
  for (Method m : {Method::Steepest, Method::Capped, Method::Valley, Method::Minimum, Method::Slide, Method::TorchLrFinder,
                   Method::Lightning, Method::FastaiValley, Method::FastaiSteep, Method::FastaiMinimum,
                   Method::FastaiSlide}) {
    Suggestion s = run(c, m);
    CHECK(s.status == SuggestStatus::Ok);
    CHECK(s.lr > 0 && std::isfinite(s.lr));
    CHECK(s.index >= 0 && s.index < static_cast<std::int64_t>(c.lrs.size()));
  }
}

TEST(suggest_reasons_not_exceptions) {
  Curve c = valley_curve(50);
  std::vector<double> nan(50, std::numeric_limits<double>::quiet_NaN()), flat(50, 2.0);
  Suggestion s = suggest(c.lrs.data(), nan.data(), 50, {});
  CHECK(s.status == SuggestStatus::AllNonFinite && !s.reason.empty() && std::isnan(s.lr));
  s = suggest(c.lrs.data(), flat.data(), 50, {});
  CHECK(s.status == SuggestStatus::NeverDecreased);
  s = suggest(c.lrs.data(), c.losses.data(), 3, {});
  CHECK(s.status == SuggestStatus::TooFewPoints);
  SuggestOptions o;
  o.method = Method::FastaiSlide;
  s = suggest(c.lrs.data(), c.losses.data(), 10, o);
  CHECK(s.status == SuggestStatus::TooFewPoints);
  o.method = Method::Lightning;
  o.skip_end = 0;  // Lightning's [10:-0] is empty
  s = suggest(c.lrs.data(), c.losses.data(), 50, o);
  CHECK(s.status == SuggestStatus::TooFewPoints);
}

TEST(suggest_misuse_throws) {
  std::vector<double> lrs{1e-3, 1e-3, 1e-2}, loss{1, 1, 1}, neg{-1e-3, 1e-3, 1e-2};
  CHECK_THROWS(suggest(lrs.data(), loss.data(), 3, {}), std::invalid_argument);
  CHECK_THROWS(suggest(neg.data(), loss.data(), 3, {}), std::invalid_argument);
  CHECK_THROWS(suggest(lrs.data(), loss.data(), 0, {}), std::invalid_argument);
  SuggestOptions bad;
  bad.zone_lo = 0.9;
  bad.zone_hi = 0.1;
  Curve c = valley_curve(20);
  CHECK_THROWS(suggest(c.lrs.data(), c.losses.data(), 20, bad), std::invalid_argument);
}

TEST(valley_index_matches_quadratic_definition) {
  // fastai's O(n^2) rule written out, against the O(n log n) one, on pseudo-random data.
  unsigned state = 12345;
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 1 + trial % 40;
    std::vector<double> y(n);
    for (auto& v : y) {
      state = state * 1103515245u + 12345u;
      v = static_cast<double>((state >> 16) % 7);  // many ties
    }
    std::vector<std::int64_t> lds(n, 1);
    std::int64_t max_start = 0, max_end = 0;
    for (std::size_t i = 1; i < n; ++i)
      for (std::size_t j = 0; j < i; ++j) {
        if (y[i] < y[j] && lds[i] < lds[j] + 1) lds[i] = lds[j] + 1;
        if (lds[max_end] < lds[i]) {
          max_end = static_cast<std::int64_t>(i);
          max_start = max_end - lds[i];
        }
      }
    const double sections = static_cast<double>(max_end - max_start) / 3.0;
    const std::int64_t expected =
        max_start + static_cast<std::int64_t>(sections) + static_cast<std::int64_t>(sections / 2.0);
    CHECK(detail::valley_index(y.data(), n) == expected);
  }
}

TEST(suggest_flat_noisy_curves_never_decreased_with_end_lr_named) {
  // Nothing learned, 5% noise: a peak and a later minimum among the noise's wiggles is no drop.
  std::mt19937_64 gen(7);
  std::normal_distribution<double> noise(0.0, 1.0);
  int picked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t n = 100;
    std::vector<double> lrs(n), loss(n);
    for (std::size_t i = 0; i < n; ++i) {
      lrs[i] = std::pow(10.0, -7.0 + 3.0 * static_cast<double>(i) / (n - 1));
      loss[i] = 0.7 * (1.0 + 0.05 * noise(gen));
    }
    Suggestion s = suggest(lrs.data(), loss.data(), n, {});
    if (s.status == SuggestStatus::Ok) {
      ++picked;
      continue;
    }
    CHECK(s.status == SuggestStatus::NeverDecreased);
    CHECK(s.reason.find("end_lr is too low") != std::string::npos);
    CHECK(s.noise > 0.02 && s.noise < 0.05);  // 0.035 = 5% of 0.7
  }
  CHECK(picked <= 3);
}

TEST(suggest_own_methods_do_not_depend_on_the_number_of_points) {
  for (Method m : {Method::Steepest, Method::Capped, Method::Valley, Method::Minimum, Method::Slide}) {
    std::vector<double> picks;
    for (std::size_t n : {100, 300, 1000}) picks.push_back(run(valley_curve(n), m).lr);
    const double ratio = *std::max_element(picks.begin(), picks.end()) / *std::min_element(picks.begin(), picks.end());
    CHECK(ratio < 1.25);
  }
}

TEST(suggest_slide_pick_is_inside_the_usable_range) {
  Curve c = valley_curve(1000);
  Suggestion s = run(c, Method::Slide);
  CHECK(s.status == SuggestStatus::Ok);
  CHECK(s.index >= s.zone_lo_index && s.index <= s.zone_hi_index);
}

TEST(suggest_default_divergence_factor_is_the_one_factor) {
  CHECK(SuggestOptions{}.diverge_factor == kDivergeFactor);
  CHECK(kDivergeFactor == 4.0);
}

// Skips and lr_diff arrive from callers: at INT64_MAX they once wrapped (ss + se + 2 < 0) and the
// slice read out of bounds. Every compatibility mode must answer "too few points" instead.
TEST(suggest_huge_skips_and_lr_diff_do_not_wrap) {
  Curve c = valley_curve(100);
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  for (Method m : {Method::TorchLrFinder, Method::Lightning, Method::FastaiSlide, Method::FastaiValley, Method::Slide}) {
    SuggestOptions o;
    o.method = m;
    o.skip_start = huge;
    o.skip_end = huge;
    o.num_it = huge;
    o.slide_lr_diff = huge;
    const Suggestion s = suggest(c.lrs.data(), c.losses.data(), c.lrs.size(), o);
    CHECK(s.status == SuggestStatus::TooFewPoints);
    o.skip_start = 0;  // the end skip alone
    CHECK(suggest(c.lrs.data(), c.losses.data(), c.lrs.size(), o).status == SuggestStatus::TooFewPoints);
  }
}
