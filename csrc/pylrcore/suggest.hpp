// Learning-rate suggestion from a range-test curve (recorded lrs and losses).
//
// pylrcore's own methods (steepest, valley, minimum, slide) work on an analysed curve:
//   1. cut at the first non-finite loss;
//   2. causal debiased EMA, and cut where it exceeds diverge_factor x its running minimum (the
//      divergence rule the peers stop on, so the exploding tail never shapes the analysis);
//   3. zero-phase smoothing of what is left (the causal EMA run once more backwards), so the curve
//      is not shifted towards larger lrs by the smoothing lag the peers' single EMA introduces;
//   4. the derivative d smoothed / d ln(lr) with numpy.gradient's non-uniform second-order rule;
//   5. the usable range ("zone"): from where the smoothed loss has fallen zone_lo of its total drop
//      to where it has fallen zone_hi of it, between the last peak and the minimum.
// When no suggestion can be made the result carries a status and a reason, not an exception.
//
// Compatibility modes reproduce, on the same recorded curve, what a peer returns:
//   torch-lr-finder 0.2.2  LRFinder.plot(suggest_lr=True)   torch_lr_finder/lr_finder.py L513-572
//   Lightning 2.6.6        _LRFinder.suggestion()           pytorch_lightning/tuner/lr_finder.py L162-196
//   fastai 2.8.12          valley/slide/minimum/steep        fastai/callback/schedule.py L216-267,
//                          + lr_find post-processing                                  L298-308
// including their float32 arithmetic where they compute in float32 tensors.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/gradient.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

enum class Method : int {
  Steepest = 0,
  Valley = 1,
  Minimum = 2,
  Slide = 3,
  TorchLrFinder = 10,
  Lightning = 11,
  FastaiValley = 12,
  FastaiSteep = 13,
  FastaiMinimum = 14,
  FastaiSlide = 15,
};

inline bool is_compat(Method m) { return static_cast<int>(m) >= 10; }

enum class SuggestStatus : int {
  Ok = 0,
  TooFewPoints = 1,    // not enough (finite) points for the rule
  AllNonFinite = 2,    // no finite loss at all
  NeverDecreased = 3,  // the smoothed loss never falls clearly below its starting level
};

struct SuggestOptions {
  Method method = Method::Steepest;
  // Own methods. beta <= 0 means "auto": an EMA window of about 5% of the curve (at least 3 points).
  double beta = -1.0;
  double diverge_factor = 4.0;  // <= 0 disables the divergence cut
  double zone_lo = 0.1, zone_hi = 0.9;  // fractions of the total drop bounding the usable range
  std::size_t min_points = 5;
  // Slide rule (own and fastai), fastai's defaults.
  std::int64_t slide_lr_diff = 15;
  double slide_thresh = 0.005;
  double slide_adjust = 1.0;
  // Peer slices. < 0 means the peer's default: torch-lr-finder skip 10/5, Lightning 10/1,
  // fastai [num_it//10 : -5] with num_it = number of points; own methods 0/0.
  std::int64_t skip_start = -1, skip_end = -1;
  std::int64_t num_it = -1;
};

struct Suggestion {
  SuggestStatus status = SuggestStatus::Ok;
  std::string reason;  // empty when Ok
  double lr = std::numeric_limits<double>::quiet_NaN();
  std::int64_t index = -1;  // index (into the input arrays) of the point the rule picked
  // Usable range (own methods only; -1 when unknown).
  std::int64_t zone_lo_index = -1, zone_hi_index = -1;
  std::int64_t min_index = -1;  // minimum of the smoothed loss
  std::int64_t cut_index = 0;   // points [0, cut_index) were analysed
  std::int64_t diverged_index = -1;  // first point past the divergence rule, -1 if none
  std::int64_t first_nonfinite_index = -1;
  double beta_used = 0.0;
  std::vector<double> smoothed;  // zero-phase smoothed loss on [0, cut_index), NaN after
  std::vector<double> slope;     // d smoothed / d ln(lr) on [0, cut_index), NaN after
};

namespace detail {

inline Suggestion no_suggestion(Suggestion s, SuggestStatus status, std::string reason) {
  s.status = status;
  s.reason = std::move(reason);
  s.lr = std::numeric_limits<double>::quiet_NaN();
  s.index = -1;
  return s;
}

// Python's argmin over a float sequence as numpy/torch do it: NaN wins (first NaN), else the first
// smallest value.
template <class T>
std::size_t argmin_nan_first(const T* v, std::size_t n) {
  std::size_t best = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isnan(v[i])) return i;
    if (v[i] < v[best]) best = i;
  }
  return best;
}

// Bounds of seq[start:n - from_end] for a sequence of length n, clamped like a Python slice. (Python's
// seq[a:-0] is empty, not seq[a:]: callers that mimic a literal `-k` handle k == 0 themselves.)
inline void python_slice(std::int64_t n, std::int64_t start, std::int64_t from_end, std::size_t& lo, std::size_t& hi) {
  auto clamp = [n](std::int64_t i) { return std::min<std::int64_t>(std::max<std::int64_t>(i, 0), n); };
  const std::int64_t a = clamp(start < 0 ? n + start : start);
  const std::int64_t b = clamp(n - from_end);
  lo = static_cast<std::size_t>(a);
  hi = static_cast<std::size_t>(std::max(a, b));
}

// fastai's valley rule: the longest strictly decreasing subsequence (not necessarily contiguous),
// then a point 1/3 + 1/6 of the way into it. fastai computes lds in O(n^2) and updates the running
// maximum inside its inner loop; the value it reads there always equals the final lds of that index
// (the first qualifying j already carries the previous maximum), so max_end is simply the first
// index reaching the longest length and max_start = max_end - that length. Patience sorting gives
// the same lengths in O(n log n). Returns an index that may be -1 (Python's lrs[-1]) before wrapping.
template <class T>
std::int64_t valley_index(const T* loss, std::size_t n) {
  std::vector<T> tails;  // tails[k]: the largest possible last value of a decreasing run of length k+1
  tails.reserve(n);
  std::int64_t max_len = 1, max_end = 0, max_start = 0;
  for (std::size_t i = 0; i < n; ++i) {
    // Strictly decreasing: find the first tail that is <= loss[i] (tails are kept non-increasing).
    auto it = std::lower_bound(tails.begin(), tails.end(), loss[i], [](T tail, T v) { return tail > v; });
    const std::int64_t len = static_cast<std::int64_t>(it - tails.begin()) + 1;
    if (it == tails.end())
      tails.push_back(loss[i]);
    else
      *it = loss[i];
    if (len > max_len) {
      max_len = len;
      max_end = static_cast<std::int64_t>(i);
      max_start = max_end - len;
    }
  }
  const double sections = static_cast<double>(max_end - max_start) / 3.0;
  return max_start + static_cast<std::int64_t>(sections) + static_cast<std::int64_t>(sections / 2.0);
}

// fastai's slide rule on the unit-spacing gradient g (numpy.gradient(losses)). Returns the index of
// the lr it settles on, counted from the start (its negative indices resolved), or -1 if n < lr_diff+1.
template <class T>
std::int64_t slide_index(const T* g, std::size_t n, std::int64_t lr_diff, T thresh) {
  const std::int64_t len = static_cast<std::int64_t>(n);
  if (lr_diff >= len) return -1;  // fastai: lrs[l_idx] raises IndexError (-l > len, without negating l)
  std::int64_t r = -1, l = r - lr_diff;
  std::int64_t pick = l;
  while (l >= -len && std::fabs(g[len + r] - g[len + l]) > thresh) {
    pick = l;
    --r;
    --l;
  }
  return len + pick;
}

template <class T>
void gradient_unit(const T* y, T* out, std::size_t n) {  // numpy.gradient(y) in T arithmetic
  for (std::size_t i = 1; i + 1 < n; ++i) out[i] = (y[i + 1] - y[i - 1]) / T(2);
  out[0] = y[1] - y[0];
  out[n - 1] = y[n - 1] - y[n - 2];
}

inline std::string count_reason(const char* what, std::size_t have, std::size_t need) {
  std::ostringstream s;
  s << what << ": " << have << " point(s), at least " << need << " needed";
  return s.str();
}

}  // namespace detail

inline void check_curve(const double* lrs, std::size_t n) {
  require(n > 0, "lrs and losses are empty; record at least a few points of the range test");
  for (std::size_t i = 0; i < n; ++i) {
    if (!(std::isfinite(lrs[i]) && lrs[i] > 0))
      fail(describe_element("lrs", i, lrs[i]) + ": learning rates must be finite and > 0");
    if (i > 0 && !(lrs[i] > lrs[i - 1]))
      fail(describe_element("lrs", i, lrs[i]) + " is not greater than " + describe_element("lrs", i - 1, lrs[i - 1]) +
           ": lrs must be strictly increasing");
  }
}

inline double auto_beta(std::size_t n) {
  const double window = std::max(3.0, 0.05 * static_cast<double>(n));
  return 1.0 - 2.0 / (window + 1.0);
}

// ---- pylrcore's own methods -------------------------------------------------------------------

inline Suggestion suggest_own(const double* lrs, const double* raw, std::size_t n, const SuggestOptions& opt) {
  Suggestion s;
  s.smoothed.assign(n, std::numeric_limits<double>::quiet_NaN());
  s.slope.assign(n, std::numeric_limits<double>::quiet_NaN());

  std::size_t cut = n;
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(raw[i])) {
      cut = i;
      s.first_nonfinite_index = static_cast<std::int64_t>(i);
      break;
    }
  if (cut == 0) {
    s.cut_index = 0;
    return detail::no_suggestion(std::move(s), SuggestStatus::AllNonFinite,
                                 "the first loss is not finite: the range test diverged immediately; "
                                 "start from a smaller lr");
  }

  const double beta = opt.beta > 0 ? opt.beta : auto_beta(cut);
  check_beta(beta);
  s.beta_used = beta;

  // Causal EMA and the divergence cut.
  std::vector<double> causal(cut);
  ema(raw, causal.data(), cut, beta, EmaKind::Debiased);
  if (opt.diverge_factor > 0) {
    double best = causal[0];
    for (std::size_t i = 1; i < cut; ++i) {
      // s > k*best for a positive best; the additive form keeps the rule meaningful for best <= 0.
      if (causal[i] > best + (opt.diverge_factor - 1.0) * std::fabs(best)) {
        s.diverged_index = static_cast<std::int64_t>(i);
        cut = i;
        break;
      }
      best = std::min(best, causal[i]);
    }
  }
  s.cut_index = static_cast<std::int64_t>(cut);
  if (cut < opt.min_points) {
    const bool early_stop = s.diverged_index >= 0 || s.first_nonfinite_index >= 0;
    const char* what = s.diverged_index >= 0        ? "the loss diverged too early"
                       : s.first_nonfinite_index >= 0 ? "too few finite points before the first non-finite loss"
                                                     : "too few points";
    return detail::no_suggestion(std::move(s), SuggestStatus::TooFewPoints,
                                 detail::count_reason(what, cut, opt.min_points) +
                                     (early_stop ? "; start the range test from a smaller lr"
                                                 : "; run the range test for more iterations"));
  }

  // Zero-phase: the causal EMA once more, backwards over the kept part.
  std::vector<double> smooth(cut);
  {
    std::vector<double> rev(causal.rend() - static_cast<std::ptrdiff_t>(cut), causal.rend()), back(cut);
    ema(rev.data(), back.data(), cut, beta, EmaKind::Debiased);
    std::reverse_copy(back.begin(), back.end(), smooth.begin());
  }
  std::vector<double> loglr(cut), slope(cut);
  for (std::size_t i = 0; i < cut; ++i) loglr[i] = std::log(lrs[i]);
  gradient(smooth.data(), loglr.data(), slope.data(), cut, 1);
  std::copy(smooth.begin(), smooth.end(), s.smoothed.begin());
  std::copy(slope.begin(), slope.end(), s.slope.begin());

  // Drop between the last peak before the minimum and the minimum.
  const std::size_t m = static_cast<std::size_t>(std::min_element(smooth.begin(), smooth.end()) - smooth.begin());
  std::size_t peak = 0;
  for (std::size_t i = 0; i <= m; ++i)
    if (smooth[i] >= smooth[peak]) peak = i;
  const double top = smooth[peak], drop = top - smooth[m];
  s.min_index = static_cast<std::int64_t>(m);
  // "Clearly below": 1% of the level, and above the noise left after smoothing. The raw noise is
  // 1.4826 x the median |raw - smooth| (the standard deviation for Gaussian noise), not the RMS: one
  // blow-up point that the divergence cut let through would otherwise dominate the RMS and hide a
  // clear drop (3.49 -> 2.40 read as "never decreased" because of a final 11.4).
  std::vector<double> resid(cut);
  for (std::size_t i = 0; i < cut; ++i) resid[i] = std::fabs(raw[i] - smooth[i]);
  std::nth_element(resid.begin(), resid.begin() + static_cast<std::ptrdiff_t>(cut / 2), resid.end());
  const double noise = 1.4826 * resid[cut / 2] * std::sqrt((1.0 - beta) / (1.0 + beta));
  if (m < 2 || m <= peak || !(drop > 0.01 * std::fabs(top)) || !(drop > 2.0 * noise)) {
    std::ostringstream r;
    r << "the smoothed loss never decreased clearly (drop " << drop << " from " << top
      << "); the lr range is too low (raise end_lr) or the model cannot learn from this data";
    return detail::no_suggestion(std::move(s), SuggestStatus::NeverDecreased, r.str());
  }
  std::size_t lo = peak, hi = m;
  for (std::size_t i = peak; i <= m; ++i)
    if (smooth[i] <= top - opt.zone_lo * drop) {
      lo = i;
      break;
    }
  for (std::size_t i = lo; i <= m; ++i)
    if (smooth[i] <= top - opt.zone_hi * drop) {
      hi = i;
      break;
    }
  s.zone_lo_index = static_cast<std::int64_t>(lo);
  s.zone_hi_index = static_cast<std::int64_t>(hi);

  std::int64_t idx = -1;
  switch (opt.method) {
    case Method::Steepest:
      idx = static_cast<std::int64_t>(lo + detail::argmin_nan_first(slope.data() + lo, hi - lo + 1));
      s.lr = lrs[idx];
      break;
    case Method::Minimum:
      idx = static_cast<std::int64_t>(m);
      s.lr = lrs[m] / 10.0;
      break;
    case Method::Valley: {
      idx = detail::valley_index(smooth.data(), cut);
      if (idx < 0) idx += static_cast<std::int64_t>(cut);
      s.lr = lrs[idx];
      break;
    }
    case Method::Slide: {
      std::vector<double> g(cut);
      detail::gradient_unit(smooth.data(), g.data(), cut);
      idx = detail::slide_index(g.data(), cut, opt.slide_lr_diff, opt.slide_thresh);
      if (idx < 0)
        return detail::no_suggestion(std::move(s), SuggestStatus::TooFewPoints,
                                     detail::count_reason("the slide rule needs slide_lr_diff + 1 points", cut,
                                                          static_cast<std::size_t>(sat_add(opt.slide_lr_diff, 1))));
      s.lr = lrs[idx] * opt.slide_adjust;
      break;
    }
    default:
      fail("internal: not an own method");
  }
  s.index = idx;
  return s;
}

// ---- compatibility modes --------------------------------------------------------------------------

inline Suggestion suggest_torch_lr_finder(const double* lrs, const double* losses, std::size_t n,
                                          const SuggestOptions& opt) {
  Suggestion s;
  const std::int64_t ss = opt.skip_start < 0 ? 10 : opt.skip_start, se = opt.skip_end < 0 ? 5 : opt.skip_end;
  s.cut_index = static_cast<std::int64_t>(n);
  const std::int64_t need = sat_add(sat_add(ss, se), 2);  // skips come from the caller: never wrap
  if (static_cast<std::int64_t>(n) < need)  // the peer raises RuntimeError here
    return detail::no_suggestion(std::move(s), SuggestStatus::TooFewPoints,
                                 detail::count_reason("torch-lr-finder needs skip_start + skip_end + 2 iterations", n,
                                                      static_cast<std::size_t>(need)));
  std::size_t lo, hi;
  detail::python_slice(static_cast<std::int64_t>(n), ss, se, lo, hi);  // torch-lr-finder handles skip_end=0 as [ss:]
  std::vector<double> g(hi - lo);
  detail::gradient_unit(losses + lo, g.data(), hi - lo);  // np.gradient(np.array(losses)), float64
  const std::size_t k = lo + detail::argmin_nan_first(g.data(), g.size());
  s.index = static_cast<std::int64_t>(k);
  s.lr = lrs[k];
  return s;
}

inline Suggestion suggest_lightning(const double* lrs, const double* losses, std::size_t n, const SuggestOptions& opt) {
  Suggestion s;
  const std::int64_t sb = opt.skip_start < 0 ? 10 : opt.skip_start, se = opt.skip_end < 0 ? 1 : opt.skip_end;
  s.cut_index = static_cast<std::int64_t>(n);
  std::size_t lo, hi;
  detail::python_slice(static_cast<std::int64_t>(n), sb, se, lo, hi);  // [sb:-se]
  if (se == 0) hi = lo;  // results[sb:-0] is empty: Lightning then returns None
  // torch.tensor(list of floats) is float32; non-finite points (after that rounding) are dropped.
  std::vector<float> x, y;
  std::vector<std::size_t> where;
  for (std::size_t i = lo; i < hi; ++i) {
    const float l = static_cast<float>(losses[i]);
    if (!std::isfinite(l)) continue;
    y.push_back(l);
    x.push_back(static_cast<float>(lrs[i]));
    where.push_back(i);
  }
  if (y.size() < 2)
    return detail::no_suggestion(std::move(s), SuggestStatus::TooFewPoints,
                                 detail::count_reason(se == 0 ? "Lightning's slice [skip_begin:-0] is empty"
                                                              : "Lightning needs 2 finite points after skipping",
                                                      y.size(), 2));
  // torch.gradient(losses, spacing=[lrs]): numpy's non-uniform rule, edge_order 1, in float32
  // (checked bit for bit against torch 2.13). Spelled out here because the generic double version
  // must not be reused: every intermediate rounds to float32.
  const std::size_t m = y.size();
  std::vector<float> g(m);
  for (std::size_t i = 1; i + 1 < m; ++i) {
    const float dx1 = x[i] - x[i - 1], dx2 = x[i + 1] - x[i];
    const float a = -(dx2) / (dx1 * (dx1 + dx2));
    const float b = (dx2 - dx1) / (dx1 * dx2);
    const float c = dx1 / (dx2 * (dx1 + dx2));
    g[i] = a * y[i - 1] + b * y[i] + c * y[i + 1];
  }
  g[0] = (y[1] - y[0]) / (x[1] - x[0]);
  g[m - 1] = (y[m - 1] - y[m - 2]) / (x[m - 1] - x[m - 2]);
  const std::size_t k = where[detail::argmin_nan_first(g.data(), m)];
  s.index = static_cast<std::int64_t>(k);
  s.lr = lrs[k];
  return s;
}

inline Suggestion suggest_fastai(const double* lrs, const double* losses, std::size_t n, const SuggestOptions& opt) {
  Suggestion s;
  const std::int64_t num_it = opt.num_it < 0 ? static_cast<std::int64_t>(n) : opt.num_it;
  std::size_t lo, hi;
  // lr_find: recorder.lrs[num_it//10:-5] (the requested num_it, not the points recorded)
  detail::python_slice(static_cast<std::int64_t>(n), num_it / 10, 5, lo, hi);
  std::vector<float> x, y;  // tensor(...) of python floats / float32 losses: float32
  for (std::size_t i = lo; i < hi; ++i) {
    const float l = static_cast<float>(losses[i]);
    if (std::isnan(l)) break;  // everything from the first NaN on is dropped (inf is kept)
    y.push_back(l);
    x.push_back(static_cast<float>(lrs[i]));
  }
  s.cut_index = static_cast<std::int64_t>(lo + y.size());
  const std::size_t m = y.size();
  std::int64_t k = -1;
  switch (opt.method) {
    case Method::FastaiValley:
      if (m == 0) break;
      k = detail::valley_index(y.data(), m);
      if (k < 0) k += static_cast<std::int64_t>(m);  // Python's lrs[-1]
      s.lr = static_cast<double>(x[static_cast<std::size_t>(k)]);
      break;
    case Method::FastaiSteep: {
      if (m < 2) break;
      std::vector<float> g(m - 1);
      for (std::size_t i = 0; i + 1 < m; ++i) {
        // float32 log, rounded from double (torch's float32 log may differ by 1 ulp in rare cases)
        const float dl = static_cast<float>(std::log(static_cast<double>(x[i + 1]))) -
                         static_cast<float>(std::log(static_cast<double>(x[i])));
        g[i] = (y[i + 1] - y[i]) / dl;
      }
      k = static_cast<std::int64_t>(detail::argmin_nan_first(g.data(), m - 1));
      s.lr = static_cast<double>(x[static_cast<std::size_t>(k)]);
      break;
    }
    case Method::FastaiMinimum:
      if (m == 0) break;
      k = static_cast<std::int64_t>(detail::argmin_nan_first(y.data(), m));
      s.lr = static_cast<double>(x[static_cast<std::size_t>(k)]) / 10.0;
      break;
    case Method::FastaiSlide: {
      if (m < 2) break;
      std::vector<float> g(m);
      detail::gradient_unit(y.data(), g.data(), m);  // np.gradient of a float32 array stays float32
      k = detail::slide_index(g.data(), m, opt.slide_lr_diff, static_cast<float>(opt.slide_thresh));
      if (k >= 0) s.lr = static_cast<double>(x[static_cast<std::size_t>(k)]) * opt.slide_adjust;
      break;
    }
    default:
      fail("internal: not a fastai method");
  }
  if (k < 0) {
    const std::size_t need = opt.method == Method::FastaiSlide ? static_cast<std::size_t>(sat_add(opt.slide_lr_diff, 1))
                             : opt.method == Method::FastaiSteep ? 2
                                                                 : 1;
    return detail::no_suggestion(
        std::move(s), SuggestStatus::TooFewPoints,
        detail::count_reason("fastai's rule has too few points after lr_find's [num_it//10:-5] slice and NaN cut", m,
                             need));
  }
  s.index = static_cast<std::int64_t>(lo) + k;
  return s;
}

inline Suggestion suggest(const double* lrs, const double* losses, std::size_t n, const SuggestOptions& opt = {}) {
  check_curve(lrs, n);
  require(opt.zone_lo >= 0 && opt.zone_lo < opt.zone_hi && opt.zone_hi <= 1,
          "zone must satisfy 0 <= zone[0] < zone[1] <= 1 (fractions of the total loss drop)");
  require(opt.slide_lr_diff >= 1, "lr_diff must be >= 1");
  require(std::isfinite(opt.slide_thresh) && opt.slide_thresh >= 0, "thresh must be a finite number >= 0");
  require(std::isfinite(opt.diverge_factor), "diverge_factor must be finite (<= 0 disables the cut)");
  require(opt.min_points >= 3, "min_points must be >= 3");
  switch (opt.method) {
    case Method::TorchLrFinder:
      return suggest_torch_lr_finder(lrs, losses, n, opt);
    case Method::Lightning:
      return suggest_lightning(lrs, losses, n, opt);
    case Method::FastaiValley:
    case Method::FastaiSteep:
    case Method::FastaiMinimum:
    case Method::FastaiSlide:
      return suggest_fastai(lrs, losses, n, opt);
    case Method::Steepest:
    case Method::Valley:
    case Method::Minimum:
    case Method::Slide:
      return suggest_own(lrs, losses, n, opt);
  }
  fail("method is not a known suggestion method");
}

}  // namespace pylrcore
