// Exponential moving averages of a loss curve, in the four forms the peers use, so a curve recorded
// by one of them can be reproduced (to 1e-12 relative; fastai's float32 form bit for bit) and compared.
//
//   Plain      s_0 = x_0,  s_i = (1-b)*x_i + b*s_{i-1}                   (torch-lr-finder, smooth_f = 1-b;
//                                                                         torch_lr_finder/lr_finder.py L359-366)
//   Debiased   a_i = b*a_{i-1} + (1-b)*x_i, a_{-1} = 0;  s_i = a_i / (1 - b^(i+1))
//                                                                        (fastai AvgSmoothLoss, learner.py L518-526)
//   Lightning  same a_i, but s_i = a_i / (1 - b^(i+2)): its bias correction uses the already
//              incremented global step, so s_0 = x_0 / (1 + b)          (pytorch_lightning/tuner/lr_finder.py L418-422)
//   Fastai     the debiased form as fastai computes it, in float32 tensors: a = torch.lerp(x, a, b), which
//              torch evaluates as fma(b - 1, a - x, a) for b >= 0.5 (fma(b, a - x, x) below), then
//              s = a / float32(1 - b**(i+1)) with Python's b**n    (fastai AvgSmoothLoss; checked against torch.lerp)
//
// Non-finite inputs (NaN, +-Inf) never enter the average, so one bad loss cannot poison every later
// value. What is output at that index is the caller's choice (NonFinite): NaN (Mark, the default:
// the point is visibly missing), the previous smoothed value (Hold), or an exception (Raise).
// Skipped points do not advance the bias-correction count: it counts the values averaged.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>

#include "pylrcore/common.hpp"
#include "pylrcore/hd.hpp"

namespace pylrcore {

enum class EmaKind : int { Plain = 0, Debiased = 1, Lightning = 2, Fastai = 3 };
inline constexpr Named<EmaKind> kEmaKindNames[] = {
    {EmaKind::Plain, "plain"}, {EmaKind::Debiased, "debiased"}, {EmaKind::Lightning, "lightning"}, {EmaKind::Fastai, "fastai"}};
// A settings field (LossTrackConfig::kind): glue::enum_from_python checks its code against this table.
inline constexpr const auto& named_table(EmaKind) { return kEmaKindNames; }
enum class NonFinite : int { Mark = 0, Hold = 1, Raise = 2 };
inline constexpr Named<NonFinite> kNonFiniteNames[] = {
    {NonFinite::Mark, "mark"}, {NonFinite::Hold, "hold"}, {NonFinite::Raise, "raise_"}};

inline void check_beta(double beta, const char* name = "beta") {
  if (!(beta > 0.0 && beta < 1.0)) {
    std::ostringstream s;
    s << name << " must be in the open interval (0, 1), got " << beta
      << " (it is the weight of the running average; e.g. 0.98 as in fastai/Lightning, "
         "or 1 - smooth_f for torch-lr-finder's smooth_f)";
    fail(s.str());
  }
}

// One finite value x into a running average that has seen `count` values: updates `average` and
// `beta_power` (b^count) and returns the smoothed output. The formulas of the table above, shared
// with the device loss tracker (cuda/loss_tracker.cu), which must round exactly like this.
PYLRCORE_HD inline double ema_step(EmaKind kind, double beta, std::int64_t count, double& average, double& beta_power,
                                   double x) {
  if (kind == EmaKind::Plain) {
    // torch-lr-finder: new weight (1-b) on the value, first point taken raw.
    average = count == 0 ? x : (1.0 - beta) * x + beta * average;
    return average;
  }
  if (kind == EmaKind::Fastai) {
    const float b = static_cast<float>(beta), a = static_cast<float>(average), xf = static_cast<float>(x);
    const float next = b >= 0.5f ? fmaf(b - 1.0f, a - xf, a) : fmaf(b, a - xf, xf);
    average = next;
    beta_power = pow(beta, static_cast<double>(count + 1));  // Python's beta ** count, as fastai writes it
    return static_cast<double>(next / static_cast<float>(1.0 - beta_power));
  }
  average = beta * average + (1.0 - beta) * x;
  beta_power *= beta;
  // Lightning divides by 1 - b^(i+2): one more factor of b than the values averaged.
  const double power = kind == EmaKind::Lightning ? beta_power * beta : beta_power;
  return average / (1.0 - power);
}

// Everything needed to resume a stream exactly (checkpoints): O(1).
struct EmaState {
  double average = 0.0;      // raw running average a_i (Plain: s_i)
  double beta_power = 1.0;   // b^count, kept incrementally
  std::int64_t count = 0;    // finite values averaged so far
  std::int64_t nonfinite = 0;  // non-finite values seen (and skipped)
  double last = std::numeric_limits<double>::quiet_NaN();  // last smoothed output that was finite
};

template <class F>
void for_each_field(EmaState& s, F&& f) {
  f("average", s.average);
  f("beta_power", s.beta_power);
  f("count", s.count);
  f("nonfinite_count", s.nonfinite);  // "nonfinite" is the policy's name in EMA's settings
  f("last", s.last);
}

class Ema {
 public:
  Ema(double beta, EmaKind kind, NonFinite policy = NonFinite::Mark)
      : beta_(beta), kind_(kind), policy_(policy) {
    check_beta(beta);
  }

  double beta() const { return beta_; }
  EmaKind kind() const { return kind_; }
  NonFinite policy() const { return policy_; }
  const EmaState& state() const { return state_; }
  std::int64_t count() const { return state_.count; }
  // Values seen so far, finite or not: the index of the next one (what a Raise policy names).
  std::size_t seen() const { return static_cast<std::size_t>(state_.count + state_.nonfinite); }

  void set_state(const EmaState& st) {
    require(st.count >= 0 && st.nonfinite >= 0, "state: count and nonfinite must be >= 0");
    require(std::isfinite(st.average), "state: average must be finite");
    require(st.beta_power >= 0.0 && st.beta_power <= 1.0, "state: beta_power must be in [0, 1]");
    state_ = st;
  }
  void reset() { state_ = EmaState{}; }

  // Smoothed value after the values seen so far (NaN before the first finite one).
  double value() const { return state_.last; }

  double update(double x, std::size_t index_for_errors = 0) {
    if (!std::isfinite(x)) {
      ++state_.nonfinite;
      switch (policy_) {
        case NonFinite::Raise: {
          std::ostringstream s;
          s << "loss at index " << index_for_errors << " is " << x
            << " (non-finite); drop it, or use nonfinite='mark' or 'hold'";
          fail(s.str());
        }
        case NonFinite::Hold:
          return state_.last;
        case NonFinite::Mark:
        default:
          return std::numeric_limits<double>::quiet_NaN();
      }
    }
    const double out = ema_step(kind_, beta_, state_.count, state_.average, state_.beta_power, x);
    ++state_.count;
    state_.last = out;
    return out;
  }

  void update(const double* x, double* out, std::size_t n, std::size_t first_index = 0) {
    for (std::size_t i = 0; i < n; ++i) out[i] = update(x[i], first_index + i);
  }

 private:
  double beta_;
  EmaKind kind_;
  NonFinite policy_;
  EmaState state_{};
};

namespace detail {

inline bool all_finite(const double* x, std::size_t n) {
  int bad = 0;  // branch-free so the loop vectorises; NaN fails the comparison too
  for (std::size_t i = 0; i < n; ++i) bad |= !(std::fabs(x[i]) <= std::numeric_limits<double>::max());
  return bad == 0;
}

// a_i = beta*a_{i-1} + w*x_i with a_{-1} = carry_in, written to out. The recurrence is one long
// dependency chain (a multiply-add of latency per element), so the array is cut into kChains chunks
// whose local recurrences (started from 0) run interleaved, and each chunk is then corrected by
// carry * beta^(j+1) from the true value at the end of the chunk before it. The correction uses a
// table of beta^1..beta^kTable times a per-block power, and stops once that power underflows.
inline void linear_recurrence(const double* x, double* out, std::size_t n, double beta, double w, double carry_in) {
  constexpr std::size_t kChains = 8, kTable = 256;
  if (n < 8 * kTable) {
    double a = carry_in;
    for (std::size_t i = 0; i < n; ++i) out[i] = a = beta * a + w * x[i];
    return;
  }
  const std::size_t len = n / kChains;
  double local[kChains] = {};
  for (std::size_t j = 0; j < len; ++j)
    for (std::size_t c = 0; c < kChains; ++c) out[c * len + j] = local[c] = beta * local[c] + w * x[c * len + j];
  for (std::size_t i = kChains * len; i < n; ++i)  // the last chunk's remainder
    out[i] = local[kChains - 1] = beta * local[kChains - 1] + w * x[i];

  double table[kTable];
  double p = 1.0;
  for (std::size_t k = 0; k < kTable; ++k) table[k] = p *= beta;
  const double block_step = table[kTable - 1];
  double carry = carry_in;
  for (std::size_t c = 0; c < kChains; ++c) {
    const std::size_t start = c * len, end = c + 1 == kChains ? n : start + len;
    double block_power = carry;  // carry * beta^(kTable*b)
    for (std::size_t b = start; b < end && block_power != 0.0; b += kTable) {
      const std::size_t m = std::min(kTable, end - b);
      for (std::size_t k = 0; k < m; ++k) out[b + k] += block_power * table[k];
      block_power *= block_step;
    }
    carry = out[end - 1];
  }
}

}  // namespace detail

// Whole-array form: out[i] = the stream's output after x[0..i]. All-finite input (the usual case)
// takes the interleaved path; it agrees with the streaming form to a few ulps.
inline void ema(const double* x, double* out, std::size_t n, double beta, EmaKind kind,
                NonFinite policy = NonFinite::Mark) {
  check_beta(beta);
  if (n == 0) return;
  if (kind == EmaKind::Fastai || !detail::all_finite(x, n)) {  // float32 rounding: the stream, element by element
    Ema e(beta, kind, policy);
    e.update(x, out, n);
    return;
  }
  if (kind == EmaKind::Plain) {
    out[0] = x[0];
    detail::linear_recurrence(x + 1, out + 1, n - 1, beta, 1.0 - beta, x[0]);
    return;
  }
  detail::linear_recurrence(x, out, n, beta, 1.0 - beta, 0.0);
  // Bias correction, only where 1 - beta^(i+1) still differs from 1; powers formed as the stream forms them.
  double power = kind == EmaKind::Lightning ? beta : 1.0;
  for (std::size_t i = 0; i < n; ++i) {
    power *= beta;
    if (1.0 - power == 1.0) break;
    out[i] /= 1.0 - power;
  }
}

}  // namespace pylrcore
