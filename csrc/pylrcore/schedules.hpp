// Learning-rate schedules as a small compiled program, evaluated in closed form (no stepping) for an
// array of steps x an array of per-group base LRs in one pass.
//
// Every node evaluates at step t to an affine map of the group's base LR b: lr = a(t)*b + c(t), plus
// the momentum it cycles (m, NaN where the node leaves momentum alone). Relative schedules (step,
// cosine to 0, warmup, ...) have c = 0; absolute floors and targets (eta_min, cyclic max_lr,
// one-cycle max_lr, swa_lr, timm lr_min) live in c. The transcendental work is therefore done once
// per step, whatever the number of groups. Composition keeps the form:
//   warmup    t <  W: f(t) * child(0);   t >= W: child(t - W)
//   sequence  child_k(t - m_{k-1}), k = number of milestones <= t   (SequentialLR, join_schedules)
//   product   (a1 b + c1)(a2 b + c2) / b, defined when at most one factor has c != 0
//   scale     k * child
//   per_group child_g for group g (torch's per-group lists)
//   callable  a user function of t, called back per step (LambdaLR); relative
//
// One family = one struct below (name, code, parameter count, check, at, offset), listed once in
// `Leaves`; eval and eval_block both call its `at`, and the Python side reads the table through
// `family_table()`. Formulas follow the peers' closed forms (torch 2.13, transformers 5.23, timm,
// optax 0.2.8); see docs/schedules.md for the documented differences.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/cpus.hpp"

#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define PYLRCORE_RESTRICT __restrict
#else
#define PYLRCORE_RESTRICT
#endif

namespace pylrcore {

enum class Family : int {
  Constant = 0,
  Step = 1,
  MultiStep = 2,
  Exponential = 3,
  Linear = 4,
  Polynomial = 5,
  Cosine = 6,
  WarmRestarts = 7,
  Cyclic = 8,
  OneCycle = 9,
  InverseSqrt = 10,
  Wsd = 11,
  Swa = 12,
  Transformers = 13,
  Timm = 14,
  CosineDecay = 15,
  PiecewiseConstant = 16,
  PiecewiseInterpolate = 17,
  TimmWsd = 18,
  InverseTime = 19,
  Warmup = 20,
  Sequence = 21,
  Product = 22,
  Scale = 23,
  PerGroup = 24,
  Callable = 25,
};

// One node: parameters by position (named per family in its struct's `params` comment), integer
// lists (milestones, boundaries), and children (indices of earlier nodes in the program).
struct Node {
  Family family = Family::Constant;
  std::vector<double> p;
  std::vector<std::int64_t> ints;
  std::vector<std::int32_t> children;
};

constexpr double kNoMomentum = std::numeric_limits<double>::quiet_NaN();

struct Affine {
  double a = 1.0, c = 0.0;
  double m = kNoMomentum;  // the cycled momentum / beta1; NaN: not cycled here
};

namespace sched {

constexpr double kPi = 3.14159265358979323846;

// 0.5 * (1 + cos(pi x)) for x in [0, 1]: 1 at x=0, 0 at x=1. With u = x - 1/2, cos(pi x) = -sin(pi u)
// and |pi u| <= pi/2, where sin's Taylor series to degree 23 is exact to ~5e-21: within 3e-16 of
// std::cos (tested), and plain arithmetic, so the block loops below vectorise (libm's cos does not).
inline double half_cos(double x) {
  const double y = kPi * (x - 0.5), y2 = y * y;
  double p = -1.0 / 25852016738884976640000.0;
  p = p * y2 + 1.0 / 51090942171709440000.0;
  p = p * y2 - 1.0 / 121645100408832000.0;
  p = p * y2 + 1.0 / 355687428096000.0;
  p = p * y2 - 1.0 / 1307674368000.0;
  p = p * y2 + 1.0 / 6227020800.0;
  p = p * y2 - 1.0 / 39916800.0;
  p = p * y2 + 1.0 / 362880.0;
  p = p * y2 - 1.0 / 5040.0;
  p = p * y2 + 1.0 / 120.0;
  p = p * y2 - 1.0 / 6.0;
  return 0.5 * (1.0 - (y + y * y2 * p));
}

// The same half cosine rising: 0 at x=0, 1 at x=1 (cosine warmups, SWA's cosine anneal).
inline double half_cos_rise(double x) { return 1.0 - half_cos(x); }

// From `start` at x=0 to `end` at x=1 along the half cosine: torch's _annealing_cos (OneCycleLR)
// and optax's _cos_interpol (piecewise_interpolate), which both write it with std::cos.
inline double cos_anneal(double start, double end, double x) { return end + (start - end) * half_cos(x); }

// transformers' cosine with num_cycles: 0.5 * (1 + cos(pi * 2 * cycles * progress)), for any
// progress (0.5 cycles: the half cosine over [0, 1]; more: it rises and falls again). Outside
// half_cos's [0, 1], so with std::cos.
inline double cycles_cos(double progress, double cycles) { return 0.5 * (1.0 + std::cos(kPi * cycles * 2.0 * progress)); }

// Growing factors (gamma > 1 in step/multistep/exponential, products and scales of them) overflow to
// inf at large steps, and inf meets 0 in the affine algebra (0 * inf = NaN). Holding them at the
// largest double keeps every lr a number: an absurdly large one is still visible as such.
inline double bounded(double x) { return std::min(std::max(x, -1.7976931348623157e308), 1.7976931348623157e308); }

// Parameter checks: every message names the parameter.
inline void positive(double v, const char* name) {
  if (!(std::isfinite(v) && v > 0)) fail(std::string(name) + " must be a finite number > 0, got " + std::to_string(v));
}
inline void non_negative(double v, const char* name) {
  if (!(std::isfinite(v) && v >= 0))
    fail(std::string(name) + " must be a finite number >= 0, got " + std::to_string(v));
}
inline void unit_open(double v, const char* name) {
  if (!(v > 0 && v < 1)) fail(std::string(name) + " must be in (0, 1), got " + std::to_string(v));
}
// Counts (lengths, periods, multipliers) travel as doubles; the bound keeps every cast to int64 and
// every sum of two of them (warmup + child step, cycle lengths) inside int64.
constexpr double kMaxCount = 4611686018427387904.0;  // 2^62
inline void count_at_least(double v, double lo, const char* name) {
  if (!(std::isfinite(v) && v >= lo && v == std::floor(v)))
    fail(std::string(name) + " must be an integer >= " + std::to_string(static_cast<long long>(lo)) + ", got " +
         std::to_string(v));
  if (v > kMaxCount) fail(std::string(name) + " must be <= 2**62, got " + std::to_string(v));
}

}  // namespace sched

// ---- the families ---------------------------------------------------------------------------------
// Each: Leaf<code, fixed parameter count>, name, check (every message names the parameter), at (the
// value at step t); offset (whether it can give c != 0), cycles_momentum and variadic where they differ
// from Leaf's.

namespace fam {
using namespace sched;

inline double clamp_steps(std::int64_t t, double T) { return std::min(static_cast<double>(t), T); }

// A parameter that names one of a few variants (a mode): p[index] holds the position of the name.
// The names are defined here only; the Python table reads them through schedule_choices().
struct Choice {
  const char* param;
  std::size_t index;
  std::vector<const char*> names;
};

inline void check_choices(const Node& n, const std::vector<Choice>& choices) {
  for (const Choice& c : choices) {
    const double v = n.p[c.index];
    if (v >= 0 && v < static_cast<double>(c.names.size()) && v == std::floor(v)) continue;
    std::string options;
    for (std::size_t k = 0; k < c.names.size(); ++k) options += (k ? ", " : "") + std::string(c.names[k]);
    fail(std::string(c.param) + " must be one of " + options);
  }
}

// A boolean parameter (Python passes float(bool)): exactly 0 or 1, so a stray 2 or NaN from a
// hand-built node is refused instead of read as "true" by a `!= 0` test.
inline void flag(const Node& n, std::size_t at, const char* family, const char* name) {
  const double v = n.p[at];
  if (!(v == 0 || v == 1))
    fail(std::string(family) + ": " + name + " must be 0 or 1 (false or true), got " + std::to_string(v));
}

inline const std::vector<const char*> kAnneal{"cos", "linear"};
inline const std::vector<const char*> kShapes{"linear", "cosine", "1-sqrt"};
// warmup's ramp (a composite, not a Leaf)
inline const std::vector<Choice> kWarmupChoices{{"kind", 2, {"linear", "cosine", "exponential"}}};

// What a family inherits unless it says otherwise: a fixed parameter count, relative values (c == 0),
// the momentum left alone and no mode parameters.
template <Family Code, int Params>
struct Leaf {
  static constexpr Family code = Code;
  static constexpr int params = Params;
  static constexpr bool variadic = false;  // true: trailing values after the fixed ones
  static bool offset(const Node&) { return false; }
  static bool cycles_momentum(const Node&) { return false; }
  static std::vector<Choice> choices() { return {}; }
};

// factor, total_iters (0: for ever). torch ConstantLR: factor until total_iters, then 1
struct Constant : Leaf<Family::Constant, 2> {
  static constexpr const char* name = "constant";
  static void check(const Node& n) {
    non_negative(n.p[0], "factor");
    count_at_least(n.p[1], 0, "total_iters");
  }
  static Affine at(const Node& n, std::int64_t t) {
    return {n.p[1] == 0 || static_cast<double>(t) < n.p[1] ? n.p[0] : 1.0, 0.0};
  }
};

struct Step : Leaf<Family::Step, 2> {  // step_size, gamma
  static constexpr const char* name = "step";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "step_size");
    non_negative(n.p[1], "gamma");
  }
  static Affine at(const Node& n, std::int64_t t) {  // integer division: td / step_size rounds past 2^53
    return {bounded(std::pow(n.p[1], static_cast<double>(t / static_cast<std::int64_t>(n.p[0])))), 0.0};
  }
};

struct MultiStep : Leaf<Family::MultiStep, 1> {  // gamma; ints = milestones (sorted, repeats stack as in torch)
  static constexpr const char* name = "multistep";
  static void check(const Node& n) {
    non_negative(n.p[0], "gamma");
    for (std::size_t k = 0; k < n.ints.size(); ++k) {
      if (n.ints[k] < 0) fail("milestones must be >= 0");
      if (k > 0 && n.ints[k] < n.ints[k - 1]) fail("milestones must be sorted in increasing order");
    }
  }
  static Affine at(const Node& n, std::int64_t t) {  // torch: gamma ** bisect_right(milestones, t)
    const auto k = std::upper_bound(n.ints.begin(), n.ints.end(), t) - n.ints.begin();
    return {bounded(std::pow(n.p[0], static_cast<double>(k))), 0.0};
  }
};

// gamma, decay_steps, staircase, end_factor (NaN: none; optax's end_value clip)
struct Exponential : Leaf<Family::Exponential, 4> {
  static constexpr const char* name = "exponential";
  static void check(const Node& n) {
    non_negative(n.p[0], "gamma");
    positive(n.p[1], "decay_steps");
    flag(n, 2, name, "staircase");
    if (!std::isnan(n.p[3])) non_negative(n.p[3], "end_factor");
  }
  static Affine at(const Node& n, std::int64_t t) {
    double e = static_cast<double>(t) / n.p[1];
    if (n.p[2] != 0)  // staircase: the exact quotient where decay_steps is a count (as Python passes it)
      e = n.p[1] == std::floor(n.p[1]) && n.p[1] <= kMaxCount ? static_cast<double>(t / static_cast<std::int64_t>(n.p[1]))
                                                             : std::floor(e);
    double v = bounded(std::pow(n.p[0], e));
    if (!std::isnan(n.p[3])) v = n.p[0] < 1.0 ? std::max(v, n.p[3]) : std::min(v, n.p[3]);
    return {v, 0.0};
  }
};

struct Linear : Leaf<Family::Linear, 3> {  // start_factor, end_factor, total_iters
  static constexpr const char* name = "linear";
  static void check(const Node& n) {
    non_negative(n.p[0], "start_factor");
    non_negative(n.p[1], "end_factor");
    count_at_least(n.p[2], 1, "total_iters");
  }
  static Affine at(const Node& n, std::int64_t t) {
    const double T = n.p[2];
    return {n.p[0] + (n.p[1] - n.p[0]) * clamp_steps(t, T) / T, 0.0};
  }
};

struct Polynomial : Leaf<Family::Polynomial, 3> {  // total_iters, power, end_factor
  static constexpr const char* name = "polynomial";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "total_iters");
    positive(n.p[1], "power");
    non_negative(n.p[2], "end_factor");
  }
  static Affine at(const Node& n, std::int64_t t) {
    const double T = n.p[0], end = n.p[2];
    return {end + (1.0 - end) * std::pow(1.0 - clamp_steps(t, T) / T, n.p[1]), 0.0};
  }
};

struct Cosine : Leaf<Family::Cosine, 2> {  // T_max, eta_min. Held at eta_min past T_max (torch's recursion rises again)
  static constexpr const char* name = "cosine";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "T_max");
    non_negative(n.p[1], "eta_min");
  }
  static bool offset(const Node& n) { return n.p[1] > 0; }
  static Affine at(const Node& n, std::int64_t t) {
    const double w = half_cos(clamp_steps(t, n.p[0]) / n.p[0]);
    return {w, n.p[1] * (1.0 - w)};
  }
};

struct WarmRestarts : Leaf<Family::WarmRestarts, 3> {  // T_0, T_mult, eta_min
  static constexpr const char* name = "warm_restarts";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "T_0");
    count_at_least(n.p[1], 1, "T_mult");
    non_negative(n.p[2], "eta_min");
  }
  static bool offset(const Node& n) { return n.p[2] > 0; }
  static Affine at(const Node& n, std::int64_t t) {
    const std::int64_t T0 = static_cast<std::int64_t>(n.p[0]), Tm = static_cast<std::int64_t>(n.p[1]);
    std::int64_t t_cur = t;
    double length = static_cast<double>(T0);  // of the cycle holding t (may exceed int64)
    if (Tm == 1) {
      t_cur = t % T0;
    } else {
      // Cycle k spans T0*Tm^k steps. Skip whole cycles with exact integers; each is at least twice
      // the last, so this runs at most 63 times. A cycle too long for int64 is longer than any
      // remaining int64 step count, so it holds t_cur: stop there (its length only scales w).
      std::int64_t t_i = T0;
      while (t_cur >= t_i) {
        t_cur -= t_i;
        if (t_i > kInt64Max / Tm) {
          length = static_cast<double>(t_i) * static_cast<double>(Tm);
          t_i = -1;
          break;
        }
        t_i *= Tm;
      }
      if (t_i > 0) length = static_cast<double>(t_i);
    }
    const double w = half_cos(static_cast<double>(t_cur) / length);
    return {w, n.p[2] * (1.0 - w)};
  }
};

inline void momentum_pair(const Node& n, std::size_t at, const char* family) {
  flag(n, at, family, "cycle_momentum");
  non_negative(n.p[at + 1], "base_momentum");
  non_negative(n.p[at + 2], "max_momentum");
}

// max_lr, step_size_up, step_size_down, mode (0 triangular, 1 triangular2, 2 exp_range), gamma,
// base_lr (NaN: the group's), cycle_momentum, base_momentum, max_momentum
struct Cyclic : Leaf<Family::Cyclic, 9> {
  static constexpr const char* name = "cyclic";
  static void check(const Node& n) {
    non_negative(n.p[0], "max_lr");
    if (!std::isnan(n.p[5])) {
      non_negative(n.p[5], "base_lr");
      if (n.p[0] < n.p[5]) fail("max_lr must be >= base_lr in cyclic");
    }
    count_at_least(n.p[1], 1, "step_size_up");
    count_at_least(n.p[2], 1, "step_size_down");
    positive(n.p[4], "gamma");
    // exp_range scales the amplitude by gamma**t: above 1 it overflows to inf (and 0 * inf = NaN)
    if (n.p[4] > 1) fail("gamma must be <= 1 (exp_range multiplies the amplitude by gamma**t), got " + std::to_string(n.p[4]));
    momentum_pair(n, 6, name);
  }
  static bool offset(const Node&) { return true; }
  static bool cycles_momentum(const Node& n) { return n.p[6] != 0; }
  static std::vector<Choice> choices() { return {{"mode", 3, {"triangular", "triangular2", "exp_range"}}}; }
  static Affine at(const Node& n, std::int64_t t) {
    const double up = n.p[1], down = n.p[2], total = up + down, ratio = up / total;
    // The position in the cycle from exact integers (uint64: up + down <= 2^63): in doubles,
    // 1 + t/total - cycle keeps only a few bits of it once t/total is large.
    const std::uint64_t whole = static_cast<std::uint64_t>(up) + static_cast<std::uint64_t>(down);
    const std::uint64_t tu = static_cast<std::uint64_t>(t);
    const double cycle = 1.0 + static_cast<double>(tu / whole);
    const double x = static_cast<double>(tu % whole) / total;
    const double sf = x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
    const int mode = static_cast<int>(n.p[3]);
    const double scale =
        mode == 0 ? 1.0 : mode == 1 ? 1.0 / std::pow(2.0, cycle - 1.0) : std::pow(n.p[4], static_cast<double>(t));
    const double w = sf * scale;  // lr = base + (max - base) * w
    Affine out = std::isnan(n.p[5]) ? Affine{1.0 - w, n.p[0] * w} : Affine{0.0, n.p[5] + (n.p[0] - n.p[5]) * w};
    // torch: momentum = max_m - (max_m - base_m) * scale_factor * scale_fn (moves against the lr)
    if (n.p[6] != 0) out.m = n.p[8] - (n.p[8] - n.p[7]) * sf * scale;
    return out;
  }
};

// total_steps, max_lr (NaN: the group's), pct_start, anneal (0 cos, 1 linear), div_factor,
// final_div_factor, three_phase, cycle_momentum, base_momentum, max_momentum
struct OneCycle : Leaf<Family::OneCycle, 10> {
  static constexpr const char* name = "one_cycle";
  static void check(const Node& n) {
    if (!std::isnan(n.p[1])) positive(n.p[1], "max_lr");
    count_at_least(n.p[0], 2, "total_steps");
    unit_open(n.p[2], "pct_start");
    positive(n.p[4], "div_factor");
    positive(n.p[5], "final_div_factor");
    flag(n, 6, name, "three_phase");
    momentum_pair(n, 7, name);
  }
  static bool offset(const Node& n) { return !std::isnan(n.p[1]); }
  static bool cycles_momentum(const Node& n) { return n.p[7] != 0; }
  static std::vector<Choice> choices() { return {{"anneal_strategy", 3, kAnneal}}; }
  static double anneal(bool cosine, double start, double end, double pct) {  // torch's two formulas
    if (cosine) return cos_anneal(start, end, pct);
    return (end - start) * pct + start;
  }
  // torch OneCycleLR's phases (lr in units of max_lr, momentum absolute). Past the last phase the
  // final value is held (torch raises past total_steps and extrapolates at t == total_steps).
  static Affine at(const Node& n, std::int64_t step) {
    const double total = n.p[0], pct = n.p[2], div = n.p[4], final_div = n.p[5];
    const double lo_m = n.p[8], hi_m = n.p[9];
    const bool cosine = n.p[3] == 0, three = n.p[6] != 0;
    // In lrs where max_lr is given (torch's own arithmetic: its linear anneal cancels at the end),
    // else in units of the group's lr.
    const bool absolute = !std::isnan(n.p[1]);
    const double peak = absolute ? n.p[1] : 1.0, initial = peak / div, min_v = initial / final_div;
    struct Phase {
      double end, start_v, end_v, start_m, end_m;
    };
    Phase phases[3];
    int count;
    if (three) {
      phases[0] = {pct * total - 1.0, initial, peak, hi_m, lo_m};
      phases[1] = {2.0 * pct * total - 2.0, peak, initial, lo_m, hi_m};
      phases[2] = {total - 1.0, initial, min_v, hi_m, hi_m};
      count = 3;
    } else {
      phases[0] = {pct * total - 1.0, initial, peak, hi_m, lo_m};
      phases[1] = {total - 1.0, peak, min_v, lo_m, hi_m};
      count = 2;
    }
    const double t = std::min(static_cast<double>(step), total - 1.0);
    double start = 0.0;
    for (int k = 0; k < count; ++k) {
      const Phase& ph = phases[k];
      if (t <= ph.end || k == count - 1) {
        const double x = (t - start) / (ph.end - start);
        const double v = anneal(cosine, ph.start_v, ph.end_v, x);
        Affine out = absolute ? Affine{0.0, v} : Affine{v, 0.0};
        if (n.p[7] != 0) out.m = anneal(cosine, ph.start_m, ph.end_m, x);
        return out;
      }
      start = ph.end;
    }
    return absolute ? Affine{0.0, min_v} : Affine{min_v, 0.0};
  }
};

struct InverseSqrt : Leaf<Family::InverseSqrt, 2> {  // warmup_steps, timescale
  static constexpr const char* name = "inverse_sqrt";
  static void check(const Node& n) {
    count_at_least(n.p[0], 0, "warmup_steps");
    positive(n.p[1], "timescale");
  }
  static Affine at(const Node& n, std::int64_t t) {
    const double td = static_cast<double>(t), W = n.p[0], ts = n.p[1];
    if (td < W) return {td / std::max(1.0, W), 0.0};
    return {1.0 / std::sqrt((td + ts - W) / ts), 0.0};
  }
};

// transformers' three shapes (0 linear, 1 cosine, 2 1-sqrt), used by wsd and its warmup
inline double wsd_shape(int kind, double x, double cycles, bool rising) {
  if (rising) return kind == 0 ? x : kind == 1 ? half_cos_rise(x) : 1.0 - std::sqrt(1.0 - x);
  return kind == 0 ? 1.0 - x : kind == 1 ? cycles_cos(x, cycles) : 1.0 - std::sqrt(x);
}

// warmup_steps, stable_steps, decay_steps, decay_type, min_lr_ratio, warmup_type, num_cycles
// (transformers get_wsd_schedule)
struct Wsd : Leaf<Family::Wsd, 7> {
  static constexpr const char* name = "wsd";
  static void check(const Node& n) {
    count_at_least(n.p[0], 0, "warmup_steps");
    count_at_least(n.p[1], 0, "stable_steps");
    count_at_least(n.p[2], 1, "decay_steps");
    if (!(n.p[4] >= 0 && n.p[4] <= 1)) fail("min_lr_ratio must be in [0, 1]");
    non_negative(n.p[6], "num_cycles");
  }
  static std::vector<Choice> choices() { return {{"decay_type", 3, kShapes}, {"warmup_type", 5, kShapes}}; }
  static Affine at(const Node& n, std::int64_t t) {
    const double td = static_cast<double>(t), W = n.p[0], S = n.p[1], D = n.p[2], m = n.p[4];
    double f;
    if (td < W) {
      f = wsd_shape(static_cast<int>(n.p[5]), td / std::max(1.0, W), n.p[6], true);
    } else if (td < W + S) {
      return {1.0, 0.0};
    } else if (td < W + S + D) {
      f = wsd_shape(static_cast<int>(n.p[3]), (td - W - S) / std::max(1.0, D), n.p[6], false);
    } else {
      return {m, 0.0};
    }
    return {std::max(0.0, f * (1.0 - m) + m), 0.0};
  }
};

// swa_lr, anneal_epochs, anneal (0 cos, 1 linear). torch SWALR: from the group's lr to swa_lr.
struct Swa : Leaf<Family::Swa, 3> {
  static constexpr const char* name = "swa";
  static void check(const Node& n) {
    non_negative(n.p[0], "swa_lr");
    count_at_least(n.p[1], 0, "anneal_epochs");
  }
  static std::vector<Choice> choices() { return {{"anneal_strategy", 2, kAnneal}}; }
  static bool offset(const Node& n) { return n.p[0] > 0; }
  static Affine at(const Node& n, std::int64_t t) {
    // torch: step = max(1, t) when anneal_epochs == 0, so the swa lr applies from step 0
    const double E = n.p[1];
    const double x = E == 0 ? 1.0 : std::min(1.0, static_cast<double>(t) / E);
    const double alpha = n.p[2] == 0 ? half_cos_rise(x) : x;
    return {1.0 - alpha, n.p[0] * alpha};
  }
};

// kind (0 linear, 1 cosine, 2 cosine_with_restarts, 3 polynomial, 4 constant_with_warmup,
// 5 cosine_with_min_lr, 6 cosine_warmup_with_min_lr), num_warmup_steps, num_training_steps,
// num_cycles, end (lr_end / lr or min_lr_rate), power, warmup_lr_rate (NaN: none).
// transformers' get_scheduler lambdas (optimization.py), relative to each group's lr.
struct Transformers : Leaf<Family::Transformers, 7> {
  static constexpr const char* name = "transformers";
  static void check(const Node& n) {
    count_at_least(n.p[1], 0, "num_warmup_steps");
    count_at_least(n.p[2], 0, "num_training_steps");
    non_negative(n.p[3], "num_cycles");
    non_negative(n.p[4], "end factor");
    positive(n.p[5], "power");
    if (!std::isnan(n.p[6])) non_negative(n.p[6], "warmup_lr_rate");
  }
  static std::vector<Choice> choices() {
    return {{"name", 0,
             {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup", "cosine_with_min_lr",
              "cosine_warmup_with_min_lr"}}};
  }
  static Affine at(const Node& n, std::int64_t step) {
    const int kind = static_cast<int>(n.p[0]);
    const double t = static_cast<double>(step), W = n.p[1], T = n.p[2], cycles = n.p[3], end = n.p[4];
    if (t < W) {
      if (kind != 6) return {t / std::max(1.0, W), 0.0};
      if (std::isnan(n.p[6])) return {(t + 1.0) / std::max(1.0, W), 0.0};
      return {n.p[6] + (1.0 - n.p[6]) * t / std::max(1.0, W - 1.0), 0.0};
    }
    const double progress = (t - W + (kind == 6 ? 1.0 : 0.0)) / std::max(1.0, T - W);
    switch (kind) {
      case 0:
        return {std::max(0.0, (T - t) / std::max(1.0, T - W)), 0.0};
      case 1:
        return {std::max(0.0, cycles_cos(progress, cycles)), 0.0};
      case 2:
        if (progress >= 1.0) return {0.0, 0.0};
        return {std::max(0.0, half_cos(std::fmod(cycles * progress, 1.0))), 0.0};
      case 3:
        if (t > T) return {end, 0.0};
        return {(1.0 - end) * std::pow(1.0 - (t - W) / std::max(1.0, T - W), n.p[5]) + end, 0.0};
      case 4:
        return {1.0, 0.0};
      default: {
        const double f = cycles_cos(progress, cycles);
        return {std::max(0.0, f * (1.0 - end) + end), 0.0};
      }
    }
  }
};

// kind (0 cosine, 1 tanh, 2 poly), t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t,
// warmup_lr_init, warmup_prefix, k_decay, power, lb, ub. timm's CosineLRScheduler, TanhLRScheduler
// and PolyLRScheduler (timm/scheduler/{cosine,tanh,poly}_lr.py, `_get_lr`), lr_min and
// warmup_lr_init absolute.
struct Timm : Leaf<Family::Timm, 13> {
  static constexpr const char* name = "timm";
  static void check(const Node& n) {
    count_at_least(n.p[1], 1, "t_initial");
    non_negative(n.p[2], "lr_min");
    positive(n.p[3], "cycle_mul");
    non_negative(n.p[4], "cycle_decay");
    count_at_least(n.p[5], 0, "cycle_limit");
    count_at_least(n.p[6], 0, "warmup_t");
    non_negative(n.p[7], "warmup_lr_init");
    flag(n, 8, name, "warmup_prefix");
    positive(n.p[9], "k_decay");
    positive(n.p[10], "power");
    if (!(n.p[11] < n.p[12])) fail("lb must be < ub");
  }
  static std::vector<Choice> choices() { return {{"kind", 0, {"cosine", "tanh", "poly"}}}; }
  static bool offset(const Node& n) { return n.p[2] > 0 || (n.p[6] > 0 && n.p[7] > 0); }
  // The decayed value at t (t >= warmup_t) as lr = a*b + c.
  static Affine decayed(const Node& n, double t) {
    const double T0 = n.p[1], mul = n.p[3], lr_min = n.p[2], k = n.p[9];
    if (n.p[8] != 0) t -= n.p[6];
    double i, t_i, t_curr;
    if (mul != 1.0) {
      const double arg = 1.0 - t / T0 * (1.0 - mul);
      if (!(arg > 0)) return {0.0, lr_min};  // past the (finite) total of shrinking cycles
      i = std::floor(std::log(arg) / std::log(mul));
      t_i = std::pow(mul, i) * T0;
      t_curr = t - (1.0 - std::pow(mul, i)) / (1.0 - mul) * T0;
    } else {
      i = std::floor(t / T0);
      t_i = T0;
      t_curr = t - T0 * i;
    }
    if (!(i < n.p[5])) return {0.0, lr_min};
    const double gamma = std::pow(n.p[4], i);
    const int kind = static_cast<int>(n.p[0]);
    double w;  // lr = lr_min + (lr_max - lr_min) * w
    if (kind == 0) {
      w = half_cos(std::pow(t_curr, k) / std::pow(t_i, k));
    } else if (kind == 1) {
      const double tr = t_curr / t_i;
      w = 0.5 * (1.0 - std::tanh(n.p[11] * (1.0 - tr) + n.p[12] * tr));
    } else {
      w = std::pow(1.0 - std::pow(t_curr, k) / std::pow(t_i, k), n.p[10]);
    }
    return {gamma * w, lr_min * (1.0 - w)};
  }
  static Affine at(const Node& n, std::int64_t step) {
    const double t = static_cast<double>(step), W = n.p[6], init = n.p[7];
    if (t >= W) return decayed(n, t);
    // warmup: init + t * (target - init) / W, the target being the base lr (tanh without prefix:
    // its value at warmup_t)
    const Affine target = n.p[0] == 1 && n.p[8] == 0 ? decayed(n, W) : Affine{1.0, 0.0};
    const double x = t / W;
    return {x * target.a, init + x * (target.c - init)};
  }
};

struct CosineDecay : Leaf<Family::CosineDecay, 3> {  // decay_steps, alpha, exponent (optax cosine_decay_schedule)
  static constexpr const char* name = "cosine_decay";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "decay_steps");
    non_negative(n.p[1], "alpha");
    positive(n.p[2], "exponent");
  }
  static Affine at(const Node& n, std::int64_t t) {
    const double w = half_cos(clamp_steps(t, n.p[0]) / n.p[0]);
    return {(1.0 - n.p[1]) * std::pow(w, n.p[2]) + n.p[1], 0.0};
  }
};

// scales...; ints = boundaries (sorted, distinct): the factor is multiplied by scale_k from
// boundary_k on (optax piecewise_constant_schedule)
struct PiecewiseConstant : Leaf<Family::PiecewiseConstant, 0> {
  static constexpr const char* name = "piecewise_constant";
  static constexpr bool variadic = true;
  static void check(const Node& n) {
    if (n.p.size() != n.ints.size()) fail("piecewise_constant needs one scale per boundary");
    for (double s : n.p) non_negative(s, "scales");
    for (std::size_t k = 0; k < n.ints.size(); ++k) {
      if (n.ints[k] < 0) fail("boundaries must be >= 0");
      if (k > 0 && n.ints[k] <= n.ints[k - 1]) fail("boundaries must be strictly increasing");
    }
  }
  static Affine at(const Node& n, std::int64_t t) {
    double v = 1.0;
    for (std::size_t k = 0; k < n.ints.size() && t >= n.ints[k]; ++k) v = bounded(v * n.p[k]);
    return {v, 0.0};
  }
};

// kind (0 linear, 1 cosine), scales...; ints = boundaries (sorted, distinct). Values are the running
// products of the scales, interpolated inside each interval, held after the last boundary
// (optax piecewise_interpolate_schedule).
struct PiecewiseInterpolate : Leaf<Family::PiecewiseInterpolate, 1> {
  static constexpr const char* name = "piecewise_interpolate";
  static constexpr bool variadic = true;
  static std::vector<Choice> choices() { return {{"interpolate_type", 0, {"linear", "cosine"}}}; }
  static void check(const Node& n) {
    if (n.p.size() != n.ints.size() + 1) fail("piecewise_interpolate needs one scale per boundary");
    for (std::size_t k = 1; k < n.p.size(); ++k) non_negative(n.p[k], "scales");
    for (std::size_t k = 0; k < n.ints.size(); ++k) {
      if (n.ints[k] < 0) fail("boundaries must be >= 0");
      if (k > 0 && n.ints[k] <= n.ints[k - 1]) fail("boundaries must be strictly increasing");
    }
  }
  static Affine at(const Node& n, std::int64_t t) {
    double v = 1.0;
    std::int64_t lo = 0;
    for (std::size_t k = 0; k < n.ints.size(); ++k) {
      const double next = bounded(v * n.p[k + 1]);
      const std::int64_t hi = n.ints[k];
      if (t < hi) {  // lo <= t < hi
        const double pct = static_cast<double>(t - lo) / static_cast<double>(std::max<std::int64_t>(hi - lo, 1));
        return {n.p[0] == 0 ? (next - v) * pct + v : cos_anneal(v, next, pct), 0.0};
      }
      v = next;
      lo = hi;
    }
    return {v, 0.0};
  }
};

// t_initial, decay_t, lr_min, stable_fn (0 constant, 1 rsqrt, 2 power), stable_timescale,
// stable_power, decay_fn (0 linear, 1 1-sqrt, 2 cosine, 3 power, 4 exp), decay_power, decay_ratio,
// warmup_t, warmup_lr_init. timm's WSDLRScheduler (timm/scheduler/wsd_lr.py `_get_lr`, 1.0.31):
// lr = lr_min + (base * stable(t_s) - lr_min) * decay(frac) after a linear warmup from warmup_lr_init.
struct TimmWsd : Leaf<Family::TimmWsd, 11> {
  static constexpr const char* name = "timm_wsd";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "t_initial");
    count_at_least(n.p[1], 1, "decay_t");
    if (n.p[1] > n.p[0]) fail("decay_t must be <= t_initial");
    non_negative(n.p[2], "lr_min");
    if (n.p[3] != 0) positive(n.p[4], "stable_timescale");
    positive(n.p[5], "stable_power");
    positive(n.p[7], "decay_power");
    unit_open(n.p[8], "decay_ratio");
    count_at_least(n.p[9], 0, "warmup_t");
    non_negative(n.p[10], "warmup_lr_init");
  }
  static bool offset(const Node& n) { return n.p[2] > 0 || (n.p[9] > 0 && n.p[10] > 0); }
  static std::vector<Choice> choices() {
    return {{"stable_fn", 3, {"constant", "rsqrt", "power"}}, {"decay_fn", 6, {"linear", "1-sqrt", "cosine", "power", "exp"}}};
  }
  static Affine at(const Node& n, std::int64_t step) {
    const double t = static_cast<double>(step), W = n.p[9];
    if (t < W) {
      const double x = t / W;
      return {x, n.p[10] * (1.0 - x)};
    }
    const double ts = t - W;
    const double stable = n.p[3] == 0 ? 1.0 : std::pow(1.0 + ts / n.p[4], -(n.p[3] == 1 ? 0.5 : n.p[5]));
    const double t_decay = ts - (n.p[0] - n.p[1]);
    if (t_decay <= 0) return {stable, 0.0};
    const double frac = std::min(t_decay / n.p[1], 1.0), r = n.p[8];
    const int kind = static_cast<int>(n.p[6]);
    const double d = kind == 0   ? 1.0 - frac
                     : kind == 1 ? 1.0 - std::sqrt(frac)
                     : kind == 2 ? half_cos(frac)
                     : kind == 3 ? 1.0 - std::pow(frac, n.p[7])
                                 : (std::pow(r, frac) - r) / (1.0 - r);
    return {stable * d, n.p[2] * (1.0 - d)};
  }
};

// decay_steps, decay_rate, staircase, power: (1 + decay_rate * t / decay_steps) ** -power, the
// quotient floored with staircase (keras InverseTimeDecay, power 1; Caffe's "inv" policy, steps 1)
struct InverseTime : Leaf<Family::InverseTime, 4> {
  static constexpr const char* name = "inverse_time";
  static void check(const Node& n) {
    count_at_least(n.p[0], 1, "decay_steps");
    non_negative(n.p[1], "decay_rate");
    flag(n, 2, name, "staircase");
    positive(n.p[3], "power");
  }
  static Affine at(const Node& n, std::int64_t t) {
    const double e = n.p[2] != 0 ? static_cast<double>(t / static_cast<std::int64_t>(n.p[0]))
                                 : static_cast<double>(t) / n.p[0];
    const double base = 1.0 + n.p[1] * e;
    return {n.p[3] == 1.0 ? 1.0 / base : std::pow(base, -n.p[3]), 0.0};
  }
};

template <class... F>
struct List {};
using Leaves = List<Constant, Step, MultiStep, Exponential, Linear, Polynomial, Cosine, WarmRestarts, Cyclic, OneCycle,
                    InverseSqrt, Wsd, Swa, Transformers, Timm, CosineDecay, PiecewiseConstant, PiecewiseInterpolate,
                    TimmWsd, InverseTime>;

// Calls fn(F{}) for the leaf family F with this code; false when the code is no leaf.
template <class Fn, class... F>
inline bool visit(Family code, Fn&& fn, List<F...>) {
  return ((code == F::code ? (fn(F{}), true) : false) || ...);
}
template <class Fn>
inline bool visit(Family code, Fn&& fn) { return visit(code, std::forward<Fn>(fn), Leaves{}); }

}  // namespace fam

// (name, code, fixed parameter count, variadic, children: -1 any, composite) for every family:
// the Python table checks itself against this at import.
struct FamilyInfo {
  std::string name;
  int code, params;
  bool variadic;
  int children;
};
template <class... F>
inline std::vector<FamilyInfo> leaf_infos(fam::List<F...>) {
  return {FamilyInfo{F::name, static_cast<int>(F::code), F::params, F::variadic, 0}...};
}
inline std::vector<FamilyInfo> family_table() {
  std::vector<FamilyInfo> out = leaf_infos(fam::Leaves{});
  out.push_back({"warmup", static_cast<int>(Family::Warmup), 3, false, 1});
  out.push_back({"sequence", static_cast<int>(Family::Sequence), 0, false, -1});
  out.push_back({"product", static_cast<int>(Family::Product), 0, false, -1});
  out.push_back({"scale", static_cast<int>(Family::Scale), 1, false, 1});
  out.push_back({"per_group", static_cast<int>(Family::PerGroup), 0, false, -1});
  out.push_back({"callable", static_cast<int>(Family::Callable), 1, false, 0});
  return out;
}

// family name -> its mode parameters, for the families that have any
template <class... F>
inline std::vector<std::pair<const char*, std::vector<fam::Choice>>> leaf_choices(fam::List<F...>) {
  return {{F::name, F::choices()}...};
}
inline std::vector<std::pair<const char*, std::vector<fam::Choice>>> family_choices() {
  std::vector<std::pair<const char*, std::vector<fam::Choice>>> out;
  for (auto& f : leaf_choices(fam::Leaves{}))
    if (!f.second.empty()) out.push_back(std::move(f));
  out.emplace_back("warmup", fam::kWarmupChoices);
  return out;
}

class Program {
 public:
  // A user function of the step (a factor of the base lr), called back by callable nodes.
  using Callback = std::function<double(std::int64_t)>;

  // Nodes in dependency order; the last one is the root.
  explicit Program(std::vector<Node> nodes, std::vector<Callback> callbacks = {})
      : nodes_(std::move(nodes)), callbacks_(std::move(callbacks)) {
    require(!nodes_.empty(), "schedule is empty");
    for (std::size_t i = 0; i < nodes_.size(); ++i) validate(i);
  }

  const std::vector<Node>& nodes() const { return nodes_; }
  // Whether values differ per group beyond the base lr (a per_group node): evaluated per group then.
  bool per_group() const { return per_group_; }
  // Whether some node cycles the momentum.
  bool cycles_momentum() const { return momentum_; }

  Affine at(std::int64_t t, std::size_t group = 0) const {
    if (t < 0) fail("step must be >= 0, got " + std::to_string(t));
    if (per_group_)  // eval() indexes a per_group node's schedules by group
      for (const Node& n : nodes_)
        if (n.family == Family::PerGroup && group >= n.children.size())
          fail("group must be < " + std::to_string(n.children.size()) + " (per_group has one schedule per param group), got " +
               std::to_string(group));
    return eval(nodes_.size() - 1, t, group);
  }

  // One step for a live optimizer: out[g] = max(min_lr[g], max(0, a*base[g] + c) * scale[g]);
  // momentum[g] (when given) = the cycled momentum, NaN where the schedule leaves it alone.
  void step_values(std::int64_t t, const double* base, const double* min_lr, const double* scale, std::size_t n_groups,
                   double* out, double* momentum = nullptr) const {
    if (t < 0) fail("step must be >= 0, got " + std::to_string(t));
    for (std::size_t g = 0; g < n_groups; ++g)  // max(0, NaN) would silently read a NaN lr as 0
      if (!(std::isfinite(base[g]) && base[g] >= 0))
        fail("base_lr must be finite and >= 0, got " + std::to_string(base[g]) + " for group " + std::to_string(g));
    if (per_group_) check_groups(n_groups);
    step_row(t, base, n_groups, out, momentum);
    for (std::size_t g = 0; g < n_groups; ++g) out[g] = std::max(min_lr[g], out[g] * scale[g]);
  }

  // out[i * n_groups + g] = lr of group g at steps[i] (momentum[i * n_groups + g] the momentum, when
  // given). Steps are validated (>= 0) first.
  void evaluate(const std::int64_t* steps, std::size_t n_steps, const double* base, std::size_t n_groups, double* out,
                unsigned threads = 0, double* momentum = nullptr) const {
    for (std::size_t i = 0; i < n_steps; ++i)
      if (steps[i] < 0) fail("steps must be >= 0, got " + std::to_string(steps[i]) + " at index " + std::to_string(i));
    for (std::size_t g = 0; g < n_groups; ++g)
      if (!(std::isfinite(base[g]) && base[g] >= 0))
        fail("base_lr must be finite and >= 0, got " + std::to_string(base[g]) + " for group " + std::to_string(g));
    if (per_group_) check_groups(n_groups);
    if (momentum) {  // the momentum is a per-step readout: the scalar path, as step_values
      for (std::size_t i = 0; i < n_steps; ++i) step_row(steps[i], base, n_groups, out + i * n_groups, momentum + i * n_groups);
      return;
    }
    auto work = [&](std::size_t lo, std::size_t hi) {
      double a[kBlock], c[kBlock];
      for (std::size_t i = lo; i < hi; i += kBlock) {
        const std::size_t m = std::min(kBlock, hi - i);
        if (per_group_) {
          for (std::size_t g = 0; g < n_groups; ++g) {
            eval_block(nodes_.size() - 1, steps + i, m, a, c, g);
            for (std::size_t k = 0; k < m; ++k) out[(i + k) * n_groups + g] = std::max(0.0, a[k] * base[g] + c[k]);
          }
          continue;
        }
        eval_block(nodes_.size() - 1, steps + i, m, a, c, 0);
        if (n_groups == 1) {
          const double b = base[0];
          for (std::size_t k = 0; k < m; ++k) out[i + k] = std::max(0.0, a[k] * b + c[k]);
          continue;
        }
        for (std::size_t k = 0; k < m; ++k) {
          double* row = out + (i + k) * n_groups;
          for (std::size_t g = 0; g < n_groups; ++g) row[g] = std::max(0.0, a[k] * base[g] + c[k]);
        }
      }
    };
    constexpr std::size_t kPerThread = 1 << 16;  // steps; below this a thread costs more than it saves
    unsigned hw = threads ? threads : available_cpus();
    if (!callbacks_.empty()) hw = 1;  // user functions are called in step order, from one thread
    const std::size_t useful = std::max<std::size_t>(1, n_steps / kPerThread);
    const unsigned n_threads = static_cast<unsigned>(std::min<std::size_t>(hw, useful));
    if (n_threads <= 1) return work(0, n_steps);
    std::vector<std::thread> pool;
    const std::size_t chunk = (n_steps + n_threads - 1) / n_threads;
    for (unsigned k = 1; k < n_threads; ++k)
      pool.emplace_back(work, std::min(n_steps, k * chunk), std::min(n_steps, (k + 1) * chunk));
    work(0, std::min(n_steps, chunk));
    for (auto& th : pool) th.join();
  }

 private:
  std::vector<Node> nodes_;
  std::vector<Callback> callbacks_;
  bool per_group_ = false, momentum_ = false;
  static constexpr std::size_t kBlock = 256;  // steps evaluated together, node by node

  // One step of every group, before min_lr and scale: lrs[g] = max(0, a*base[g] + c) and momenta[g]
  // (when given) the cycled momentum. Outside per_group the map and the momentum do not depend on
  // the base lr: one eval for every group, and a loop that vectorises.
  void step_row(std::int64_t t, const double* base, std::size_t n_groups, double* lrs, double* momenta) const {
    if (per_group_) {  // each group its own schedule, so its own momentum
      for (std::size_t g = 0; g < n_groups; ++g) {
        const Affine f = eval(nodes_.size() - 1, t, g);
        lrs[g] = std::max(0.0, f.a * base[g] + f.c);
        if (momenta) momenta[g] = f.m;
      }
      return;
    }
    const Affine f = eval(nodes_.size() - 1, t, 0);
    for (std::size_t g = 0; g < n_groups; ++g) lrs[g] = std::max(0.0, f.a * base[g] + f.c);
    if (momenta) std::fill(momenta, momenta + n_groups, f.m);
  }

  void check_groups(std::size_t n_groups) const {
    for (const Node& n : nodes_)
      if (n.family == Family::PerGroup && n.children.size() != n_groups)
        fail("per_group has " + std::to_string(n.children.size()) + " schedules but there are " +
             std::to_string(n_groups) + " param groups (base lrs): give one schedule per group");
  }

  std::size_t kid(const Node& n, std::size_t k) const { return static_cast<std::size_t>(n.children[k]); }

  // The same values as eval(), for m <= kBlock steps at once: leaves run their `at` in a plain loop
  // the compiler can inline and vectorise; composites evaluate their children on shifted step blocks
  // and combine.
  void eval_block(std::size_t i, const std::int64_t* t, std::size_t m, double* a, double* c, std::size_t g) const {
    const Node& n = nodes_[i];
    const bool leaf = n.family < Family::Warmup && fam::visit(n.family, [&](auto f) {
      using F = decltype(f);
      // Restricted: otherwise stores through a/c could alias the node's parameters, which forces a
      // reload per step and keeps the loop from vectorising.
      double* PYLRCORE_RESTRICT ra = a;
      double* PYLRCORE_RESTRICT rc = c;
      for (std::size_t k = 0; k < m; ++k) {
        const Affine v = F::at(n, t[k]);
        ra[k] = v.a;
        rc[k] = v.c;
      }
    });
    if (leaf) return;
    switch (n.family) {
      case Family::Warmup: {
        const std::int64_t W = static_cast<std::int64_t>(n.p[0]);
        std::int64_t shifted[kBlock];
        for (std::size_t k = 0; k < m; ++k) shifted[k] = t[k] >= W ? t[k] - W : 0;
        eval_block(kid(n, 0), shifted, m, a, c, g);
        for (std::size_t k = 0; k < m; ++k) {
          if (t[k] >= W) continue;
          const double f = warmup_factor(n, static_cast<double>(t[k]));
          a[k] *= f;
          c[k] *= f;
        }
        return;
      }
      case Family::Sequence: {
        double ca[kBlock], cc[kBlock];
        std::int64_t shifted[kBlock];
        std::size_t which[kBlock];
        for (std::size_t k = 0; k < m; ++k)
          which[k] = static_cast<std::size_t>(std::upper_bound(n.ints.begin(), n.ints.end(), t[k]) - n.ints.begin());
        for (std::size_t child = 0; child < n.children.size(); ++child) {
          const std::int64_t begin = child == 0 ? 0 : n.ints[child - 1];
          bool any = false;
          for (std::size_t k = 0; k < m; ++k) {
            shifted[k] = which[k] == child ? t[k] - begin : 0;
            any |= which[k] == child;
          }
          if (!any) continue;
          eval_block(kid(n, child), shifted, m, ca, cc, g);
          for (std::size_t k = 0; k < m; ++k)
            if (which[k] == child) a[k] = ca[k], c[k] = cc[k];
        }
        return;
      }
      case Family::Product: {
        double ca[kBlock], cc[kBlock];
        for (std::size_t k = 0; k < m; ++k) a[k] = 1.0, c[k] = 0.0;
        for (std::size_t child = 0; child < n.children.size(); ++child) {
          eval_block(kid(n, child), t, m, ca, cc, g);
          for (std::size_t k = 0; k < m; ++k) {
            const double a0 = a[k];
            a[k] = sched::bounded(a0 * ca[k]);
            c[k] = sched::bounded(c[k] * ca[k] + a0 * cc[k]);
          }
        }
        return;
      }
      case Family::Scale:
        eval_block(kid(n, 0), t, m, a, c, g);
        for (std::size_t k = 0; k < m; ++k) a[k] = sched::bounded(a[k] * n.p[0]), c[k] = sched::bounded(c[k] * n.p[0]);
        return;
      case Family::PerGroup:
        return eval_block(kid(n, g), t, m, a, c, g);
      default:  // callables: one step at a time
        for (std::size_t k = 0; k < m; ++k) {
          const Affine f = eval(i, t[k], g);
          a[k] = f.a;
          c[k] = f.c;
        }
        return;
    }
  }

  static double warmup_factor(const Node& n, double t) {
    const double x = t / n.p[0], sf = n.p[1];
    const int kind = static_cast<int>(n.p[2]);
    return kind == 0 ? sf + (1.0 - sf) * x : kind == 1 ? sf + (1.0 - sf) * sched::half_cos_rise(x) : std::pow(sf, 1.0 - x);
  }

  void expect(const Node& n, std::size_t params, std::size_t children, const char* family, bool variadic = false) const {
    if ((variadic ? n.p.size() < params : n.p.size() != params) || n.children.size() != children) {
      std::ostringstream s;
      s << family << " node needs " << (variadic ? "at least " : "") << params << " parameters and " << children
        << " children";
      fail(s.str());
    }
  }

  void validate(std::size_t i) {
    using namespace sched;
    const Node& n = nodes_[i];
    for (std::int32_t c : n.children)
      if (c < 0 || static_cast<std::size_t>(c) >= i) fail("schedule node refers to a later or missing node");
    const bool leaf = fam::visit(n.family, [&](auto f) {
      using F = decltype(f);
      expect(n, F::params, 0, F::name, F::variadic);
      fam::check_choices(n, F::choices());
      F::check(n);
      momentum_ = momentum_ || F::cycles_momentum(n);
    });
    if (leaf) return;
    switch (n.family) {
      case Family::Warmup:  // steps, start_factor, kind (0 linear, 1 cosine, 2 exponential)
        expect(n, 3, 1, "warmup");
        fam::check_choices(n, fam::kWarmupChoices);
        count_at_least(n.p[0], 1, "warmup steps");
        non_negative(n.p[1], "start_factor");
        if (n.p[1] > 1) fail("start_factor must be <= 1 (warmup ramps up to the schedule)");
        if (n.p[2] == 2 && !(n.p[1] > 0)) fail("start_factor must be > 0 for an exponential warmup");
        break;
      case Family::Sequence:  // ints = milestones, one fewer than children
        require(n.children.size() >= 2 && n.ints.size() + 1 == n.children.size(),
                "sequence needs one milestone fewer than schedules");
        for (std::size_t k = 0; k < n.ints.size(); ++k) {
          if (n.ints[k] < 0) fail("milestones must be >= 0");
          if (k > 0 && n.ints[k] <= n.ints[k - 1]) fail("milestones must be strictly increasing");
        }
        break;
      case Family::Product: {
        require(n.children.size() >= 2, "a product needs at least two schedules");
        int absolute = 0;
        for (std::size_t k = 0; k < n.children.size(); ++k) absolute += has_offset(kid(n, k));
        if (absolute > 1)
          fail("a product may contain at most one schedule with an absolute floor or target "
               "(eta_min, base_lr/max_lr given as values); make the others relative");
        break;
      }
      case Family::Scale:
        expect(n, 1, 1, "scale");
        non_negative(n.p[0], "scale factor");
        break;
      case Family::PerGroup:
        require(!n.children.empty(), "per_group needs one schedule per param group");
        per_group_ = true;
        break;
      case Family::Callable:
        expect(n, 1, 0, "callable");
        if (!(n.p[0] >= 0 && n.p[0] < static_cast<double>(callbacks_.size()) && n.p[0] == std::floor(n.p[0])))
          fail("callable node refers to a missing function");
        break;
      default:
        fail("unknown schedule family " + std::to_string(static_cast<int>(n.family)));
    }
  }

  // Whether a node can produce c != 0 (an absolute floor/target).
  bool has_offset(std::size_t i) const {
    const Node& n = nodes_[i];
    bool out = false;
    if (fam::visit(n.family, [&](auto f) { out = decltype(f)::offset(n); })) return out;
    for (std::int32_t c : n.children)
      if (has_offset(static_cast<std::size_t>(c))) return true;
    return false;
  }

  Affine eval(std::size_t i, std::int64_t t, std::size_t g) const {
    const Node& n = nodes_[i];
    Affine out;
    if (n.family < Family::Warmup && fam::visit(n.family, [&](auto f) { out = decltype(f)::at(n, t); })) return out;
    switch (n.family) {
      case Family::Warmup: {
        const double W = n.p[0];
        if (static_cast<double>(t) >= W) return eval(kid(n, 0), t - static_cast<std::int64_t>(W), g);
        const double f = warmup_factor(n, static_cast<double>(t));
        const Affine start = eval(kid(n, 0), 0, g);
        return {f * start.a, f * start.c, start.m};
      }
      case Family::Sequence: {
        const auto k = static_cast<std::size_t>(std::upper_bound(n.ints.begin(), n.ints.end(), t) - n.ints.begin());
        const std::int64_t begin = k == 0 ? 0 : n.ints[k - 1];
        return eval(kid(n, k), t - begin, g);
      }
      case Family::Product: {
        Affine acc{1.0, 0.0};
        for (std::size_t k = 0; k < n.children.size(); ++k) {
          const Affine f = eval(kid(n, k), t, g);
          // (a1 b + c1)(a2 b + c2)/b with c1*c2 == 0 (validated): stays affine.
          acc = {sched::bounded(acc.a * f.a), sched::bounded(acc.c * f.a + acc.a * f.c), std::isnan(acc.m) ? f.m : acc.m};
        }
        return acc;
      }
      case Family::Scale: {
        const Affine f = eval(kid(n, 0), t, g);
        return {sched::bounded(n.p[0] * f.a), sched::bounded(n.p[0] * f.c), f.m};
      }
      case Family::PerGroup:
        return eval(kid(n, g), t, g);
      case Family::Callable: {
        const double v = callbacks_[static_cast<std::size_t>(n.p[0])](t);
        if (!(std::isfinite(v) && v >= 0))
          fail("the schedule's function returned " + std::to_string(v) + " at step " + std::to_string(t) +
               "; it must return a finite factor >= 0");
        return {v, 0.0};
      }
      default:
        return {};
    }
  }
};

}  // namespace pylrcore
