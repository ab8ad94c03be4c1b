// Learning-rate schedules as a small compiled program, evaluated in closed form (no stepping) for an
// array of steps x an array of per-group base LRs in one pass.
//
// Every node evaluates at step t to an affine map of the group's base LR b: lr = a(t)*b + c(t).
// Relative schedules (step, cosine to 0, warmup, ...) have c = 0; absolute floors and targets
// (eta_min, cyclic max_lr, one-cycle max_lr) live in c. The transcendental work is therefore done
// once per step, whatever the number of groups. Composition keeps the form:
//   warmup  t <  W: f(t) * child(0);   t >= W: child(t - W)
//   sequence      child_k(t - m_{k-1}), k = number of milestones <= t   (SequentialLR, join_schedules)
//   product       (a1 b + c1)(a2 b + c2) / b, defined when at most one factor has c != 0
//   scale         k * child
// Formulas follow torch.optim.lr_scheduler (2.13) closed forms where torch has the family; see
// pylrcore/schedules.py for the documented differences (values past T_max / total_steps are held).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pylrcore/common.hpp"

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
  Warmup = 20,
  Sequence = 21,
  Product = 22,
  Scale = 23,
};

// One node: parameters by position (documented per family in make_* below), integer lists
// (milestones), and children (indices of earlier nodes in the program).
struct Node {
  Family family = Family::Constant;
  std::vector<double> p;
  std::vector<std::int64_t> ints;
  std::vector<std::int32_t> children;
};

struct Affine {
  double a = 1.0, c = 0.0;
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

class Program {
 public:
  // Nodes in dependency order; the last one is the root.
  explicit Program(std::vector<Node> nodes) : nodes_(std::move(nodes)) {
    require(!nodes_.empty(), "schedule is empty");
    for (std::size_t i = 0; i < nodes_.size(); ++i) validate(i);
  }

  const std::vector<Node>& nodes() const { return nodes_; }

  Affine at(std::int64_t t) const {
    if (t < 0) fail("step must be >= 0, got " + std::to_string(t));
    return eval(nodes_.size() - 1, t);
  }

  // One step for a live optimizer: out[g] = max(min_lr[g], max(0, a*base[g] + c) * scale[g]).
  void step_values(std::int64_t t, const double* base, const double* min_lr, const double* scale, std::size_t n_groups,
                   double* out) const {
    if (t < 0) fail("step must be >= 0, got " + std::to_string(t));
    for (std::size_t g = 0; g < n_groups; ++g)  // max(0, NaN) would silently read a NaN lr as 0
      if (!(std::isfinite(base[g]) && base[g] >= 0))
        fail("base_lr must be finite and >= 0, got " + std::to_string(base[g]) + " for group " + std::to_string(g));
    const Affine f = at(t);
    for (std::size_t g = 0; g < n_groups; ++g)
      out[g] = std::max(min_lr[g], std::max(0.0, f.a * base[g] + f.c) * scale[g]);
  }

  // out[i * n_groups + g] = lr of group g at steps[i]. Steps are validated (>= 0) first.
  void evaluate(const std::int64_t* steps, std::size_t n_steps, const double* base, std::size_t n_groups, double* out,
                unsigned threads = 0) const {
    for (std::size_t i = 0; i < n_steps; ++i)
      if (steps[i] < 0) fail("steps must be >= 0, got " + std::to_string(steps[i]) + " at index " + std::to_string(i));
    for (std::size_t g = 0; g < n_groups; ++g)
      if (!(std::isfinite(base[g]) && base[g] >= 0))
        fail("base_lr must be finite and >= 0, got " + std::to_string(base[g]) + " for group " + std::to_string(g));
    auto work = [&](std::size_t lo, std::size_t hi) {
      double a[kBlock], c[kBlock];
      for (std::size_t i = lo; i < hi; i += kBlock) {
        const std::size_t m = std::min(kBlock, hi - i);
        eval_block(nodes_.size() - 1, steps + i, m, a, c);
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
    unsigned hw = threads ? threads : std::max(1u, std::thread::hardware_concurrency());
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
  static constexpr std::size_t kBlock = 256;  // steps evaluated together, node by node

  // The same values as eval(), for m <= kBlock steps at once: leaves run simple loops the compiler
  // vectorises; composites evaluate their children on shifted step blocks and combine.
  void eval_block(std::size_t i, const std::int64_t* t, std::size_t m, double* a, double* c) const {
    using sched::half_cos;
    const Node& n = nodes_[i];
    switch (n.family) {
      case Family::Cosine: {
        const double T = n.p[0], floor = n.p[1];
        for (std::size_t k = 0; k < m; ++k) {
          const double w = half_cos(std::min(static_cast<double>(t[k]), T) / T);
          a[k] = w;
          c[k] = floor * (1.0 - w);
        }
        return;
      }
      case Family::Constant:
        for (std::size_t k = 0; k < m; ++k) a[k] = n.p[0], c[k] = 0.0;
        return;
      case Family::Linear: {
        const double T = n.p[2], sf = n.p[0], span = n.p[1] - n.p[0];
        for (std::size_t k = 0; k < m; ++k) a[k] = sf + span * std::min(static_cast<double>(t[k]), T) / T, c[k] = 0.0;
        return;
      }
      case Family::Warmup: {
        const std::int64_t W = static_cast<std::int64_t>(n.p[0]);
        std::int64_t shifted[kBlock];
        for (std::size_t k = 0; k < m; ++k) shifted[k] = t[k] >= W ? t[k] - W : 0;
        eval_block(static_cast<std::size_t>(n.children[0]), shifted, m, a, c);
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
          eval_block(static_cast<std::size_t>(n.children[child]), shifted, m, ca, cc);
          for (std::size_t k = 0; k < m; ++k)
            if (which[k] == child) a[k] = ca[k], c[k] = cc[k];
        }
        return;
      }
      case Family::Product: {
        double ca[kBlock], cc[kBlock];
        for (std::size_t k = 0; k < m; ++k) a[k] = 1.0, c[k] = 0.0;
        for (std::int32_t child : n.children) {
          eval_block(static_cast<std::size_t>(child), t, m, ca, cc);
          for (std::size_t k = 0; k < m; ++k) {
            const double a0 = a[k];
            a[k] = sched::bounded(a0 * ca[k]);
            c[k] = sched::bounded(c[k] * ca[k] + a0 * cc[k]);
          }
        }
        return;
      }
      case Family::Scale:
        eval_block(static_cast<std::size_t>(n.children[0]), t, m, a, c);
        for (std::size_t k = 0; k < m; ++k) a[k] = sched::bounded(a[k] * n.p[0]), c[k] = sched::bounded(c[k] * n.p[0]);
        return;
      default:  // the other families: one step at a time through the scalar path
        for (std::size_t k = 0; k < m; ++k) {
          const Affine f = eval(i, t[k]);
          a[k] = f.a;
          c[k] = f.c;
        }
        return;
    }
  }

  static double warmup_factor(const Node& n, double t) {
    const double x = t / n.p[0], sf = n.p[1];
    const int kind = static_cast<int>(n.p[2]);
    return kind == 0 ? sf + (1.0 - sf) * x : kind == 1 ? sf + (1.0 - sf) * (1.0 - sched::half_cos(x)) : std::pow(sf, 1.0 - x);
  }

  const Node& child(const Node& n, std::size_t k) const { return nodes_[static_cast<std::size_t>(n.children[k])]; }

  void expect(const Node& n, std::size_t params, std::size_t children, const char* family) const {
    if (n.p.size() != params || n.children.size() != children) {
      std::ostringstream s;
      s << family << " node needs " << params << " parameters and " << children << " children";
      fail(s.str());
    }
  }

  void validate(std::size_t i) {
    using namespace sched;
    const Node& n = nodes_[i];
    for (std::int32_t c : n.children)
      if (c < 0 || static_cast<std::size_t>(c) >= i) fail("schedule node refers to a later or missing node");
    switch (n.family) {
      case Family::Constant:  // factor
        expect(n, 1, 0, "constant");
        non_negative(n.p[0], "factor");
        break;
      case Family::Step:  // step_size, gamma
        expect(n, 2, 0, "step");
        count_at_least(n.p[0], 1, "step_size");
        non_negative(n.p[1], "gamma");
        break;
      case Family::MultiStep:  // gamma; ints = milestones (sorted, repeats stack as in torch)
        expect(n, 1, 0, "multistep");
        non_negative(n.p[0], "gamma");
        for (std::size_t k = 0; k < n.ints.size(); ++k) {
          if (n.ints[k] < 0) fail("milestones must be >= 0");
          if (k > 0 && n.ints[k] < n.ints[k - 1]) fail("milestones must be sorted in increasing order");
        }
        break;
      case Family::Exponential:  // decay_rate, decay_steps, staircase
        expect(n, 3, 0, "exponential");
        non_negative(n.p[0], "gamma");
        positive(n.p[1], "decay_steps");
        break;
      case Family::Linear:  // start_factor, end_factor, total_iters
        expect(n, 3, 0, "linear");
        non_negative(n.p[0], "start_factor");
        non_negative(n.p[1], "end_factor");
        count_at_least(n.p[2], 1, "total_iters");
        break;
      case Family::Polynomial:  // total_iters, power, end_factor
        expect(n, 3, 0, "polynomial");
        count_at_least(n.p[0], 1, "total_iters");
        positive(n.p[1], "power");
        non_negative(n.p[2], "end_factor");
        break;
      case Family::Cosine:  // T_max, eta_min
        expect(n, 2, 0, "cosine");
        count_at_least(n.p[0], 1, "T_max");
        non_negative(n.p[1], "eta_min");
        break;
      case Family::WarmRestarts:  // T_0, T_mult, eta_min
        expect(n, 3, 0, "warm_restarts");
        count_at_least(n.p[0], 1, "T_0");
        count_at_least(n.p[1], 1, "T_mult");
        non_negative(n.p[2], "eta_min");
        break;
      case Family::Cyclic:  // max_lr, base_lr (NaN: the group's), up, down, mode, gamma
        expect(n, 6, 0, "cyclic");
        non_negative(n.p[0], "max_lr");
        if (!std::isnan(n.p[1])) {
          non_negative(n.p[1], "base_lr");
          if (n.p[0] < n.p[1]) fail("max_lr must be >= base_lr in cyclic");
        }
        count_at_least(n.p[2], 1, "step_size_up");
        count_at_least(n.p[3], 1, "step_size_down");
        if (!(n.p[4] == 0 || n.p[4] == 1 || n.p[4] == 2)) fail("mode must be triangular, triangular2 or exp_range");
        positive(n.p[5], "gamma");
        // exp_range scales the amplitude by gamma**t: above 1 it overflows to inf (and 0 * inf = NaN)
        if (n.p[5] > 1) fail("gamma must be <= 1 (exp_range multiplies the amplitude by gamma**t), got " + std::to_string(n.p[5]));
        break;
      case Family::OneCycle:  // max_lr (NaN: the group's), total_steps, pct_start, anneal (0 cos, 1 linear),
                              // div_factor, final_div_factor, three_phase
        expect(n, 7, 0, "one_cycle");
        if (!std::isnan(n.p[0])) positive(n.p[0], "max_lr");
        count_at_least(n.p[1], 2, "total_steps");
        unit_open(n.p[2], "pct_start");
        positive(n.p[4], "div_factor");
        positive(n.p[5], "final_div_factor");
        break;
      case Family::InverseSqrt:  // warmup_steps, timescale
        expect(n, 2, 0, "inverse_sqrt");
        count_at_least(n.p[0], 0, "warmup_steps");
        positive(n.p[1], "timescale");
        break;
      case Family::Wsd:  // warmup, stable, decay, decay_type (0 linear, 1 cosine, 2 1-sqrt), min_ratio
        expect(n, 5, 0, "wsd");
        count_at_least(n.p[0], 0, "warmup_steps");
        count_at_least(n.p[1], 0, "stable_steps");
        count_at_least(n.p[2], 1, "decay_steps");
        if (!(n.p[4] >= 0 && n.p[4] <= 1)) fail("min_lr_ratio must be in [0, 1]");
        break;
      case Family::Warmup:  // steps, start_factor, kind (0 linear, 1 cosine, 2 exponential)
        expect(n, 3, 1, "warmup");
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
        for (std::size_t k = 0; k < n.children.size(); ++k) absolute += has_offset(static_cast<std::size_t>(n.children[k]));
        if (absolute > 1)
          fail("a product may contain at most one schedule with an absolute floor or target "
               "(eta_min, base_lr/max_lr given as values); make the others relative");
        break;
      }
      case Family::Scale:
        expect(n, 1, 1, "scale");
        non_negative(n.p[0], "scale factor");
        break;
      default:
        fail("unknown schedule family");
    }
  }

  // Whether a node can produce c != 0 (an absolute floor/target).
  bool has_offset(std::size_t i) const {
    const Node& n = nodes_[i];
    switch (n.family) {
      case Family::Cosine:
      case Family::WarmRestarts:
        return n.p.back() > 0;
      case Family::Cyclic:
        return true;
      case Family::OneCycle:
        return !std::isnan(n.p[0]);
      case Family::Warmup:
      case Family::Scale:
        return has_offset(static_cast<std::size_t>(n.children[0]));
      case Family::Sequence:
      case Family::Product:
        for (std::int32_t c : n.children)
          if (has_offset(static_cast<std::size_t>(c))) return true;
        return false;
      default:
        return false;
    }
  }

  Affine eval(std::size_t i, std::int64_t t) const {
    using sched::half_cos;
    using sched::kPi;
    const Node& n = nodes_[i];
    const double td = static_cast<double>(t);
    switch (n.family) {
      case Family::Constant:
        return {n.p[0], 0.0};
      case Family::Step:  // integer division: td / step_size rounds once t > 2^53 and can cross a boundary
        return {sched::bounded(std::pow(n.p[1], static_cast<double>(t / static_cast<std::int64_t>(n.p[0])))), 0.0};
      case Family::MultiStep: {
        // torch: gamma ** bisect_right(milestones, t)
        const auto k = std::upper_bound(n.ints.begin(), n.ints.end(), t) - n.ints.begin();
        return {sched::bounded(std::pow(n.p[0], static_cast<double>(k))), 0.0};
      }
      case Family::Exponential: {
        double e = td / n.p[1];
        if (n.p[2] != 0)  // staircase: the exact quotient where decay_steps is a count (as Python passes it)
          e = n.p[1] == std::floor(n.p[1]) && n.p[1] <= sched::kMaxCount
                  ? static_cast<double>(t / static_cast<std::int64_t>(n.p[1]))
                  : std::floor(e);
        return {sched::bounded(std::pow(n.p[0], e)), 0.0};
      }
      case Family::Linear: {
        const double T = n.p[2];
        return {n.p[0] + (n.p[1] - n.p[0]) * std::min(td, T) / T, 0.0};
      }
      case Family::Polynomial: {
        const double T = n.p[0], end = n.p[2];
        const double base = std::pow(1.0 - std::min(td, T) / T, n.p[1]);
        return {end + (1.0 - end) * base, 0.0};
      }
      case Family::Cosine: {
        // Held at eta_min past T_max (torch's recursion rises again: its documented quirk).
        const double w = half_cos(std::min(td, n.p[0]) / n.p[0]);
        return {w, n.p[1] * (1.0 - w)};
      }
      case Family::WarmRestarts: {
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
      case Family::Cyclic: {
        const double up = n.p[2], down = n.p[3], total = up + down, ratio = up / total;
        // The position in the cycle from exact integers (uint64: up + down <= 2^63): in doubles,
        // 1 + t/total - cycle keeps only a few bits of it once t/total is large.
        const std::uint64_t whole = static_cast<std::uint64_t>(up) + static_cast<std::uint64_t>(down);
        const std::uint64_t tu = static_cast<std::uint64_t>(t);
        const double cycle = 1.0 + static_cast<double>(tu / whole);
        const double x = static_cast<double>(tu % whole) / total;
        const double sf = x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
        const int mode = static_cast<int>(n.p[4]);
        const double scale = mode == 0 ? 1.0 : mode == 1 ? 1.0 / std::pow(2.0, cycle - 1.0) : std::pow(n.p[5], td);
        const double w = sf * scale;  // lr = base + (max - base) * w
        if (std::isnan(n.p[1])) return {1.0 - w, n.p[0] * w};
        return {0.0, n.p[1] + (n.p[0] - n.p[1]) * w};
      }
      case Family::OneCycle: {
        const double rel = one_cycle(n, td);  // in units of max_lr
        if (std::isnan(n.p[0])) return {rel, 0.0};
        return {0.0, n.p[0] * rel};
      }
      case Family::InverseSqrt: {
        const double W = n.p[0], ts = n.p[1];
        if (td < W) return {td / std::max(1.0, W), 0.0};
        return {1.0 / std::sqrt((td + ts - W) / ts), 0.0};
      }
      case Family::Wsd: {
        const double W = n.p[0], S = n.p[1], D = n.p[2], m = n.p[4];
        double f;
        if (td < W) {
          f = td / W;
        } else if (td < W + S) {
          f = 1.0;
        } else if (td < W + S + D) {
          const double x = (td - W - S) / D;
          const int kind = static_cast<int>(n.p[3]);
          f = kind == 0 ? 1.0 - x : kind == 1 ? half_cos(x) : 1.0 - std::sqrt(x);
        } else {
          f = 0.0;
        }
        return {f * (1.0 - m) + m, 0.0};
      }
      case Family::Warmup: {
        const double W = n.p[0];
        if (td >= W) return eval(static_cast<std::size_t>(n.children[0]), t - static_cast<std::int64_t>(W));
        const double f = warmup_factor(n, td);
        const Affine start = eval(static_cast<std::size_t>(n.children[0]), 0);
        return {f * start.a, f * start.c};
      }
      case Family::Sequence: {
        const auto k = static_cast<std::size_t>(std::upper_bound(n.ints.begin(), n.ints.end(), t) - n.ints.begin());
        const std::int64_t begin = k == 0 ? 0 : n.ints[k - 1];
        return eval(static_cast<std::size_t>(n.children[k]), t - begin);
      }
      case Family::Product: {
        Affine acc{1.0, 0.0};
        for (std::int32_t c : n.children) {
          const Affine f = eval(static_cast<std::size_t>(c), t);
          // (a1 b + c1)(a2 b + c2)/b with c1*c2 == 0 (validated): stays affine.
          acc = {sched::bounded(acc.a * f.a), sched::bounded(acc.c * f.a + acc.a * f.c)};
        }
        return acc;
      }
      case Family::Scale: {
        const Affine f = eval(static_cast<std::size_t>(n.children[0]), t);
        return {sched::bounded(n.p[0] * f.a), sched::bounded(n.p[0] * f.c)};
      }
    }
    return {};
  }

  // torch OneCycleLR's phases, as a fraction of max_lr. Past the last phase the final value is held
  // (torch raises past total_steps and extrapolates at t == total_steps).
  static double one_cycle(const Node& n, double t) {
    const double total = n.p[1], pct = n.p[2], div = n.p[4], final_div = n.p[5];
    const bool cosine = n.p[3] == 0, three = n.p[6] != 0;
    const double initial = 1.0 / div, min_v = initial / final_div;
    struct Phase {
      double end, start_v, end_v;
    };
    Phase phases[3];
    int count;
    if (three) {
      phases[0] = {pct * total - 1.0, initial, 1.0};
      phases[1] = {2.0 * pct * total - 2.0, 1.0, initial};
      phases[2] = {total - 1.0, initial, min_v};
      count = 3;
    } else {
      phases[0] = {pct * total - 1.0, initial, 1.0};
      phases[1] = {total - 1.0, 1.0, min_v};
      count = 2;
    }
    t = std::min(t, total - 1.0);
    double start = 0.0;
    for (int k = 0; k < count; ++k) {
      const Phase& ph = phases[k];
      if (t <= ph.end || k == count - 1) {
        const double x = (t - start) / (ph.end - start);
        if (cosine) return ph.end_v + (ph.start_v - ph.end_v) / 2.0 * (std::cos(sched::kPi * x) + 1.0);
        return (ph.end_v - ph.start_v) * x + ph.start_v;
      }
      start = ph.end;
    }
    return min_v;
  }
};

}  // namespace pylrcore
