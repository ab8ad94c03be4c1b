// Exponential moving averages of a loss curve, in the three forms the peers use, so a curve recorded
// by one of them can be reproduced to rounding (1e-12 relative) and compared.
//
//   Plain      s_0 = x_0,  s_i = (1-b)*x_i + b*s_{i-1}                   (torch-lr-finder, smooth_f = 1-b;
//                                                                         torch_lr_finder/lr_finder.py L359-366)
//   Debiased   a_i = b*a_{i-1} + (1-b)*x_i, a_{-1} = 0;  s_i = a_i / (1 - b^(i+1))
//                                                                        (fastai AvgSmoothLoss, learner.py L518-526)
//   Lightning  same a_i, but s_i = a_i / (1 - b^(i+2)): its bias correction uses the already
//              incremented global step, so s_0 = x_0 / (1 + b)          (pytorch_lightning/tuner/lr_finder.py L418-422)
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

namespace pylrcore {

enum class EmaKind : int { Plain = 0, Debiased = 1, Lightning = 2 };
enum class NonFinite : int { Mark = 0, Hold = 1, Raise = 2 };

inline void check_beta(double beta, const char* name = "beta") {
  if (!(beta > 0.0 && beta < 1.0)) {
    std::ostringstream s;
    s << name << " must be in the open interval (0, 1), got " << beta
      << " (it is the weight of the running average; e.g. 0.98 as in fastai/Lightning, "
         "or 1 - smooth_f for torch-lr-finder's smooth_f)";
    fail(s.str());
  }
}

// Everything needed to resume a stream exactly (checkpoints): O(1).
struct EmaState {
  double average = 0.0;      // raw running average a_i (Plain: s_i)
  double beta_power = 1.0;   // b^count, kept incrementally
  std::int64_t count = 0;    // finite values averaged so far
  std::int64_t nonfinite = 0;  // non-finite values seen (and skipped)
  double last = std::numeric_limits<double>::quiet_NaN();  // last smoothed output that was finite
};

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
    double out;
    if (kind_ == EmaKind::Plain) {
      // torch-lr-finder: new weight (1-b) on the value, first point taken raw.
      state_.average = state_.count == 0 ? x : (1.0 - beta_) * x + beta_ * state_.average;
      out = state_.average;
    } else {
      state_.average = beta_ * state_.average + (1.0 - beta_) * x;
      state_.beta_power *= beta_;
      // Lightning divides by 1 - b^(i+2): one more factor of b than the values averaged.
      const double power = kind_ == EmaKind::Lightning ? state_.beta_power * beta_ : state_.beta_power;
      out = state_.average / (1.0 - power);
    }
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

// Whole-array form: out[i] = the stream's output after x[0..i].
inline void ema(const double* x, double* out, std::size_t n, double beta, EmaKind kind,
                NonFinite policy = NonFinite::Mark) {
  Ema e(beta, kind, policy);
  e.update(x, out, n);
}

}  // namespace pylrcore
