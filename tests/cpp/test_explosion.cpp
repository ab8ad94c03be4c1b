// The guard's long-run explosion rule (step/explosion.hpp): quiet on long healthy-looking streams where
// the range-test rule fires, quick on a real blow-up, and safe with zeros, negatives and bad states.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/detect.hpp"
#include "pylrcore/step/explosion.hpp"

using namespace pylrcore;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();

// A long run's minibatch losses: log-normal noise (sd 0.8 in ln) around a level that falls from 2
// to 0.02, with slow "catapults" (the level x3 for 150 steps, as SGD near the edge of stability
// does) and exact zeros (float32 cross-entropy on a fitted batch).
std::vector<double> healthy(unsigned seed, int n) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> noise(0.0, 0.8);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    double level = 0.02 + 2.0 * std::exp(-i / 800.0);
    if (i > 3000 && (i / 700) % 3 == 0 && i % 700 < 150) level *= 3.0;
    out.push_back(u(gen) < 0.003 ? 0.0 : level * std::exp(noise(gen) - 0.32));
  }
  return out;
}

// Steps at which EXPLOSION began.
std::vector<int> onsets(const std::vector<double>& losses, std::int64_t warmup = 50) {
  explosion::State s;
  std::vector<int> out;
  for (std::size_t i = 0; i < losses.size(); ++i)
    if (explosion::update(s, losses[i], 4.0, warmup, kNan).onset) out.push_back(static_cast<int>(i));
  return out;
}

}  // namespace

TEST(explosion_rule_is_quiet_on_long_noisy_runs_where_the_range_test_rule_fires) {
  for (unsigned seed : {1u, 2u, 3u}) {
    const std::vector<double> losses = healthy(seed, 20000);
    CHECK(onsets(losses).empty());
    Detector range_test;  // smoothed > 4 x best: what the guard used before
    int fired = 0;
    for (double x : losses) fired += (range_test.update(x).onset & kExplosion) ? 1 : 0;
    CHECK(fired > 0);
  }
}

TEST(explosion_rule_fires_soon_after_a_real_blow_up_and_once) {
  std::vector<double> losses = healthy(4, 3000);
  std::mt19937_64 gen(5);
  std::normal_distribution<double> noise(0.0, 0.3);
  for (int i = 0; i < 500; ++i) losses.push_back(50.0 * std::exp(noise(gen)));  // x ~1000 and stays
  const std::vector<int> at = onsets(losses);
  CHECK(at.size() == 1);
  CHECK(!at.empty() && at[0] >= 3000 + explosion::kPersist - 1 && at[0] <= 3000 + explosion::kPersist + 10);
}

TEST(explosion_rule_fires_when_the_loss_goes_back_to_its_start_at_a_small_factor) {
  // A run that learned from 3.3 to 1.2, then (lr too high) sits at 3.5: only 3x its recent level.
  std::mt19937_64 gen(6);
  std::normal_distribution<double> noise(0.0, 0.1);
  std::vector<double> losses;
  for (int i = 0; i < 4000; ++i) losses.push_back((1.2 + 2.1 * std::exp(-i / 300.0)) * std::exp(noise(gen)));
  for (int i = 0; i < 300; ++i) losses.push_back(3.5 * std::exp(noise(gen)));
  const std::vector<int> at = onsets(losses);
  CHECK(at.size() == 1 && at[0] > 4000 && at[0] < 4060);
}

TEST(explosion_rule_ignores_a_short_bad_stretch_and_a_flat_run) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> noise(0.0, 0.5);
  std::vector<double> losses;
  for (int i = 0; i < 6000; ++i) {
    double x = 0.5 * std::exp(noise(gen));  // no progress at all: only the noise margin and the factor guard it
    if (i >= 3000 && i < 3008) x *= 30.0;   // eight bad batches in a row
    losses.push_back(x);
  }
  CHECK(onsets(losses).empty());
}

TEST(explosion_rule_state_zeros_negatives_and_validation) {
  explosion::State s;
  CHECK(!explosion::update(s, 0.0, 4.0, 50, kNan).onset && s.n == 0);  // no scale before a positive loss
  const explosion::Step first = explosion::update(s, 2.0, 4.0, 50, kNan);
  CHECK(s.n == 1 && s.floor == 2.0 * explosion::kFloor && first.level == 2.0 && std::isnan(first.at));
  explosion::update(s, 0.0, 4.0, 50, kNan);  // a zero counts as the floor
  CHECK(s.n == 2 && std::isfinite(s.level));
  const explosion::Step nan_step = explosion::update(s, kNan, 4.0, 50, kNan);
  CHECK(s.n == 2 && nan_step.level == std::exp(s.level));  // reported, not taken
  CHECK(explosion::valid(s));
  explosion::update(s, -1.0, 4.0, 50, kNan);
  CHECK(s.linear == 1 && std::isnan(explosion::update(s, 1.0, 4.0, 50, kNan).level));
  explosion::State bad = s;
  bad.above = -1;
  CHECK(!explosion::valid(bad));
  bad = s;
  bad.noise = std::numeric_limits<double>::infinity();
  CHECK(!explosion::valid(bad));
  // Counters loaded at their limits saturate instead of overflowing.
  explosion::State full;
  for (int i = 0; i < 100; ++i) explosion::update(full, 1.0, 4.0, 10, kNan);
  full.n = explosion::kMaxCount;
  full.above = explosion::kPersist + 1;
  CHECK(explosion::valid(full));
  explosion::update(full, 1e6, 4.0, 10, kNan);
  CHECK(full.n == explosion::kMaxCount && full.above == explosion::kPersist + 1);
}
