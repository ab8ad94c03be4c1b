#include <cmath>
#include <vector>

#include "check.hpp"
#include "pylrcore/schedules.hpp"

using namespace pylrcore;

namespace {
constexpr double kPiTest = 3.14159265358979323846;
Node leaf(Family f, std::vector<double> p, std::vector<std::int64_t> ints = {}) { return Node{f, std::move(p), std::move(ints), {}}; }
}  // namespace

TEST(schedule_cosine_endpoints_floor_and_hold) {
  Program prog({leaf(Family::Cosine, {100, 0.01})});
  CHECK_CLOSE(prog.at(0).a * 1.0 + prog.at(0).c, 1.0, 1e-15);
  CHECK_CLOSE(prog.at(50).a * 1.0 + prog.at(50).c, 0.505, 1e-14);
  const Affine end = prog.at(100), after = prog.at(10'000);
  CHECK_CLOSE(end.a + end.c, 0.01, 1e-12);
  CHECK(after.a == end.a && after.c == end.c);  // held past T_max
}

TEST(schedule_warmup_then_sequence_and_product) {
  std::vector<Node> nodes{leaf(Family::Cosine, {10, 0.0})};
  nodes.push_back(Node{Family::Warmup, {5, 0.2, 0}, {}, {0}});
  Program warm(nodes);
  CHECK_CLOSE(warm.at(0).a, 0.2, 1e-15);
  CHECK_CLOSE(warm.at(5).a, 1.0, 1e-15);  // the cosine's own step 0
  nodes = {leaf(Family::Constant, {1.0, 0}), leaf(Family::Step, {2, 0.5})};
  nodes.push_back(Node{Family::Sequence, {}, {3}, {0, 1}});
  Program seq(nodes);
  CHECK(seq.at(2).a == 1.0 && seq.at(3).a == 1.0 && seq.at(5).a == 0.5);
  nodes = {leaf(Family::Cosine, {10, 0.1}), leaf(Family::Exponential, {0.5, 1, 0, std::nan("")})};
  nodes.push_back(Node{Family::Product, {}, {}, {0, 1}});
  Program prod(nodes);
  const Affine c = Program({leaf(Family::Cosine, {10, 0.1})}).at(3), p = prod.at(3);
  CHECK_CLOSE(p.a * 2.0 + p.c, (c.a * 2.0 + c.c) * 0.125, 1e-14);
}

TEST(schedule_warm_restarts_cycle_lengths) {
  Program prog({leaf(Family::WarmRestarts, {3, 2, 0.0})});  // cycles of 3, 6, 12 steps
  for (std::int64_t t : {0, 3, 9, 21}) CHECK_CLOSE(prog.at(t).a, 1.0, 1e-15);
  CHECK(prog.at(8).a < prog.at(4).a);
}

TEST(schedule_evaluate_threads_agree_and_never_negative) {
  Program prog({leaf(Family::OneCycle, {1000, std::nan(""), 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95})});
  std::vector<std::int64_t> steps(300'000);
  for (std::size_t i = 0; i < steps.size(); ++i) steps[i] = static_cast<std::int64_t>(i % 5000);
  std::vector<double> base{1e-3, 1e-1}, one(steps.size() * 2), many(steps.size() * 2);
  prog.evaluate(steps.data(), steps.size(), base.data(), 2, one.data(), 1);
  prog.evaluate(steps.data(), steps.size(), base.data(), 2, many.data(), 4);
  CHECK(one == many);
  for (double v : one) CHECK(v >= 0 && std::isfinite(v));
}

TEST(schedule_validation_names_the_parameter) {
  CHECK_THROWS(Program({leaf(Family::Cosine, {0, 0.0})}), std::invalid_argument);
  CHECK_THROWS(Program({leaf(Family::OneCycle, {100, 1.0, 1.5, 0, 25, 1e4, 0, 0, 0.85, 0.95})}), std::invalid_argument);
  CHECK_THROWS(Program({leaf(Family::MultiStep, {0.1}, {30, 10})}), std::invalid_argument);
  CHECK_THROWS(Program({leaf(Family::Cyclic, {0.001, 10, 10, 0, 1.0, 0.01, 0, 0.8, 0.9})}), std::invalid_argument);
  CHECK_THROWS(Program({leaf(Family::Step, {2.5, 0.1})}), std::invalid_argument);
  CHECK_THROWS(Program(std::vector<Node>{}), std::invalid_argument);
  std::vector<Node> two_floors{leaf(Family::Cosine, {10, 0.1}), leaf(Family::Cosine, {10, 0.1})};
  two_floors.push_back(Node{Family::Product, {}, {}, {0, 1}});
  CHECK_THROWS(Program(two_floors), std::invalid_argument);
  Program ok({leaf(Family::Constant, {1.0, 0})});
  std::vector<std::int64_t> bad_step{-1};
  double out;
  double base = 1.0;
  CHECK_THROWS(ok.evaluate(bad_step.data(), 1, &base, 1, &out), std::invalid_argument);
}

TEST(schedule_half_cos_polynomial_matches_std_cos) {
  for (int i = 0; i <= 100000; ++i) {
    const double x = i / 100000.0;
    CHECK(std::fabs(sched::half_cos(x) - 0.5 * (1.0 + std::cos(sched::kPi * x))) <= 4e-16);
  }
}

TEST(schedule_cosine_shapes_are_the_peers_formulas) {
  for (int i = 0; i <= 1000; ++i) {
    const double x = i / 1000.0;
    CHECK(std::fabs(sched::half_cos_rise(x) - 0.5 * (1.0 - std::cos(sched::kPi * x))) <= 4e-16);
    // torch's _annealing_cos / optax's _cos_interpol, written with std::cos
    const double start = 0.025, end = 2.5e-7;
    CHECK(std::fabs(sched::cos_anneal(start, end, x) - (end + (start - end) / 2.0 * (std::cos(sched::kPi * x) + 1.0))) <=
          4e-16 * start);
    CHECK(std::fabs(sched::cycles_cos(x, 0.5) - sched::half_cos(x)) <= 4e-16);  // transformers' default num_cycles
  }
  CHECK(sched::cos_anneal(3.0, 1.0, 0.0) == 3.0 && sched::cos_anneal(3.0, 1.0, 1.0) == 1.0);
  CHECK(sched::half_cos_rise(0.0) == 0.0 && sched::half_cos_rise(1.0) == 1.0);
}

TEST(schedule_block_evaluation_equals_per_step_evaluation) {
  // warmup(7) >> sequence([cosine(50, eta_min=0.01) * exponential(0.99), linear(...)], [40]), scaled
  std::vector<Node> nodes{leaf(Family::Cosine, {50, 0.01}), leaf(Family::Exponential, {0.99, 1, 0, std::nan("")})};
  nodes.push_back(Node{Family::Product, {}, {}, {0, 1}});
  nodes.push_back(leaf(Family::Linear, {1.0, 0.1, 30}));
  nodes.push_back(Node{Family::Sequence, {}, {40}, {2, 3}});
  nodes.push_back(Node{Family::Warmup, {7, 0.05, 1}, {}, {4}});
  nodes.push_back(Node{Family::Scale, {0.5}, {}, {5}});
  Program prog(nodes);
  std::vector<std::int64_t> steps;
  for (std::int64_t t = 0; t < 1000; ++t) steps.push_back((t * 7919) % 130);  // unsorted, repeats
  const double base = 0.3;
  std::vector<double> out(steps.size());
  prog.evaluate(steps.data(), steps.size(), &base, 1, out.data(), 1);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const Affine f = prog.at(steps[i]);
    CHECK(out[i] == std::max(0.0, f.a * base + f.c));
  }
}

// Exact positions worked out by hand: with T0 = 2^62, T_mult = 2 the second cycle (2^63 steps) does
// not fit in int64, so step 2^62 + 2^61 is a quarter into it; the loop once wrapped t_i to 0 and hung.
TEST(schedule_warm_restarts_large_steps_saturate) {
  const double two62 = 4611686018427387904.0;
  Program big({leaf(Family::WarmRestarts, {two62, 2, 0.0})});
  const std::int64_t t62 = std::int64_t{1} << 62, t61 = std::int64_t{1} << 61;
  CHECK_CLOSE(big.at(t62).a, 1.0, 1e-15);                             // restart
  CHECK_CLOSE(big.at(t62 + t61).a, 0.5 * (1 + std::cos(kPiTest / 4)), 1e-12);
  Program huge_mult({leaf(Family::WarmRestarts, {10, two62, 0.0})});  // cycle 2 is 10 * 2^62 steps
  CHECK_CLOSE(huge_mult.at(INT64_MAX).a, 0.5 * (1 + std::cos(kPiTest * (INT64_MAX - 10.0) / (10.0 * two62))), 1e-12);
  Program seven({leaf(Family::WarmRestarts, {7, 5, 0.0})});
  const Affine f = seven.at(INT64_MAX);
  CHECK(std::isfinite(f.a) && f.a >= 0 && f.a <= 1);
}

TEST(schedule_counts_above_2_62_are_refused) {
  CHECK_THROWS(Program({leaf(Family::Cosine, {9223372036854775808.0, 0.0})}), std::invalid_argument);
  CHECK_THROWS(Program({leaf(Family::WarmRestarts, {10, 9223372036854775808.0, 0.0})}), std::invalid_argument);
}

TEST(schedule_step_values_refuses_nan_base_lr) {
  Program prog({leaf(Family::Constant, {1.0, 0})});
  const double base = std::nan(""), min_lr = 0.0, scale = 1.0;
  double out = 0.0;
  CHECK_THROWS(prog.step_values(3, &base, &min_lr, &scale, 1, &out), std::invalid_argument);
}

TEST(saturating_int64_addition) {
  CHECK(sat_add(INT64_MAX, 2) == INT64_MAX);
  CHECK(sat_add(INT64_MIN, -1) == INT64_MIN);
  CHECK(sat_add(40, 2) == 42);
}

// gamma > 1 overflows pow to inf at large steps; 0 * inf would make the affine map NaN.
TEST(schedule_growing_factors_stay_numbers) {
  std::vector<Node> nodes{leaf(Family::Constant, {1.0, 0}), leaf(Family::Exponential, {27.0, 1, 0, std::nan("")})};
  nodes.push_back(Node{Family::Product, {}, {}, {0, 1}});
  nodes.push_back(Node{Family::Scale, {0.0}, {}, {2}});
  Program prog(nodes);
  const Affine f = prog.at(216);
  CHECK(f.a == 0.0 && f.c == 0.0);
  nodes.pop_back();
  const Affine g = Program(nodes).at(INT64_MAX);
  CHECK(std::isfinite(g.a) && g.c == 0.0);
}

TEST(schedule_one_cycle_cycles_momentum_against_the_lr) {
  Program prog({leaf(Family::OneCycle, {100, std::nan(""), 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95})});
  CHECK_CLOSE(prog.at(0).m, 0.95, 1e-15);   // max momentum at the lowest lr
  CHECK_CLOSE(prog.at(29).m, 0.85, 1e-15);  // base momentum at the peak lr
  CHECK_CLOSE(prog.at(99).m, 0.95, 1e-15);
  CHECK(prog.cycles_momentum());
  CHECK(std::isnan(Program({leaf(Family::Cosine, {10, 0.0})}).at(3).m));
}

TEST(schedule_per_group_and_callable) {
  std::vector<Node> nodes{leaf(Family::Cosine, {10, 0.0}), leaf(Family::Constant, {0.5, 0})};
  nodes.push_back(Node{Family::PerGroup, {}, {}, {0, 1}});
  Program prog(nodes);
  CHECK(prog.per_group());
  std::vector<double> base{1.0, 2.0}, mins{0, 0}, scale{1, 1}, out(2);
  prog.step_values(10, base.data(), mins.data(), scale.data(), 2, out.data());
  CHECK_CLOSE(out[0], 0.0, 1e-15);
  CHECK_CLOSE(out[1], 1.0, 1e-15);
  CHECK_THROWS(prog.step_values(1, base.data(), mins.data(), scale.data(), 1, out.data()), std::invalid_argument);
  Program fn({leaf(Family::Callable, {0})}, {[](std::int64_t t) { return 1.0 / (1.0 + static_cast<double>(t)); }});
  CHECK_CLOSE(fn.at(3).a, 0.25, 1e-15);
  CHECK_THROWS(Program({leaf(Family::Callable, {1})}), std::invalid_argument);
}

// The momentum does not depend on the base lr: one evaluation per step fills every group, except
// under per_group, where each group has its own schedule (and momentum).
TEST(schedule_evaluate_momentum_once_per_step_per_group_only_under_per_group) {
  const double nan = std::nan("");
  int calls = 0;
  std::vector<Node> nodes{leaf(Family::Callable, {0}), leaf(Family::OneCycle, {40, nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95})};
  nodes.push_back(Node{Family::Product, {}, {}, {0, 1}});
  const Program prog(nodes, {[&calls](std::int64_t t) { return ++calls, 1.0 / (1.0 + 0.01 * static_cast<double>(t)); }});
  std::vector<std::int64_t> steps(50);
  for (std::size_t i = 0; i < steps.size(); ++i) steps[i] = static_cast<std::int64_t>(i);
  const std::vector<double> base{0.1, 0.2, 0.3};
  std::vector<double> lrs(steps.size() * 3), momenta(lrs.size()), plain(lrs.size());
  prog.evaluate(steps.data(), steps.size(), base.data(), 3, lrs.data(), 1, momenta.data());
  CHECK(calls == 50);  // not once per group
  prog.evaluate(steps.data(), steps.size(), base.data(), 3, plain.data(), 1);
  for (std::size_t i = 0; i < steps.size(); ++i)
    for (std::size_t g = 0; g < 3; ++g) {
      const Affine f = prog.at(steps[i], g);
      CHECK(lrs[i * 3 + g] == std::max(0.0, f.a * base[g] + f.c) && lrs[i * 3 + g] == plain[i * 3 + g]);
      CHECK(momenta[i * 3 + g] == f.m && !std::isnan(f.m));
    }

  nodes = {leaf(Family::OneCycle, {40, nan, 0.3, 0, 25, 1e4, 0, 1, 0.80, 0.90}),
           leaf(Family::OneCycle, {40, nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95})};
  nodes.push_back(Node{Family::PerGroup, {}, {}, {0, 1}});
  const Program groups(nodes);
  std::vector<double> two_lrs(steps.size() * 2), two_momenta(two_lrs.size());
  groups.evaluate(steps.data(), steps.size(), base.data(), 2, two_lrs.data(), 1, two_momenta.data());
  for (std::size_t i = 0; i < steps.size(); ++i)
    for (std::size_t g = 0; g < 2; ++g) CHECK(two_momenta[i * 2 + g] == groups.at(steps[i], g).m);
  CHECK(two_momenta[0] == 0.90 && two_momenta[1] == 0.95);
}

TEST(schedule_inverse_time_keras_and_caffe_forms) {
  // keras InverseTimeDecay(lr, 10, 0.5): lr / (1 + 0.5 t / 10); staircase floors t / 10
  const Program smooth({leaf(Family::InverseTime, {10, 0.5, 0, 1})}), stairs({leaf(Family::InverseTime, {10, 0.5, 1, 1})});
  CHECK(smooth.at(0).a == 1.0);
  CHECK_CLOSE(smooth.at(15).a, 1.0 / 1.75, 1e-15);
  CHECK_CLOSE(stairs.at(15).a, 1.0 / 1.5, 1e-15);
  // Caffe's inv policy: (1 + gamma t) ** -power
  CHECK_CLOSE(Program({leaf(Family::InverseTime, {1, 1e-4, 0, 0.75})}).at(5000).a, std::pow(1.5, -0.75), 1e-15);
  CHECK_THROWS_WITH(Program({leaf(Family::InverseTime, {0, 0.5, 0, 1})}), std::invalid_argument, "decay_steps");
}

TEST(schedule_every_boolean_parameter_is_0_or_1) {
  const double nan = std::nan("");
  struct Flag {
    Family family;
    std::vector<double> p;
    std::size_t at;
    const char* message;
  };
  const Flag flags[] = {
      {Family::Exponential, {0.5, 1, 0, nan}, 2, "exponential: staircase must be 0 or 1"},
      {Family::InverseTime, {10, 0.5, 0, 1}, 2, "inverse_time: staircase must be 0 or 1"},
      {Family::Cyclic, {0.01, 10, 10, 0, 1.0, nan, 1, 0.8, 0.9}, 6, "cyclic: cycle_momentum must be 0 or 1"},
      {Family::OneCycle, {1000, nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95}, 6, "one_cycle: three_phase must be 0 or 1"},
      {Family::OneCycle, {1000, nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95}, 7, "one_cycle: cycle_momentum must be 0 or 1"},
      {Family::Timm, {0, 100, 0, 1, 1, 1, 0, 0, 0, 1, 1, -7, 7}, 8, "timm: warmup_prefix must be 0 or 1"},
  };
  for (const Flag& f : flags) {
    std::vector<double> p = f.p;
    for (double ok : {0.0, 1.0}) {
      p[f.at] = ok;
      Program({leaf(f.family, p)});
    }
    for (double bad : {2.0, 0.5, -1.0, nan}) {
      p[f.at] = bad;
      CHECK_THROWS_WITH(Program({leaf(f.family, p)}), std::invalid_argument, f.message);
    }
  }
}
