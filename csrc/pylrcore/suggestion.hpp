// Learning-rate suggestion from a range-test curve (recorded lrs and losses).
//
// pylrcore's own methods (steepest, valley, minimum, slide) work on an analysed curve:
//   1. cut at the first non-finite loss;
//   2. causal debiased EMA, and cut where it exceeds diverge_factor (kDivergeFactor, the one
//      divergence factor of pylrcore: the finder's stop, the CLI, the demo and the plot use it too)
//      x its running minimum, so the exploding tail never shapes the analysis;
//   3. zero-phase smoothing of what is left (the causal EMA run once more backwards), so the curve
//      is not shifted towards larger lrs by the smoothing lag the peers' single EMA introduces;
//   4. the derivative d smoothed / d ln(lr) with numpy.gradient's non-uniform second-order rule;
//   5. the drop must be significant against the curve's own noise: the largest fall of a wider
//      zero-phase smoothing (significance_beta) must exceed about kSignificantDrop x that curve's
//      noise (robust_noise, smoothed_noise_factor), otherwise there is no suggestion ("never
//      decreased");
//   6. the usable range ("zone"): from where the smoothed loss has fallen zone_lo of its total drop,
//      and half the significant drop (clearly below its noise level), for good, to where it has
//      fallen zone_hi of it.
// Every rule reads the curve per decade of lr, never per point, so a sweep sampled with 100 or
// 1000 points gives the same answer (the smoothing window is a fixed fraction of the sweep).
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
#include "pylrcore/divergence.hpp"
#include "pylrcore/gradient.hpp"
#include "pylrcore/smoothing.hpp"

namespace pylrcore {

enum class Method : int {
  Steepest = 0,
  Valley = 1,
  Minimum = 2,
  Slide = 3,
  Capped = 4,  // the default: steepest, capped at a tenth of the minimum's lr
  TorchLrFinder = 10,
  Lightning = 11,
  FastaiValley = 12,
  FastaiSteep = 13,
  FastaiMinimum = 14,
  FastaiSlide = 15,
};

inline constexpr Named<Method> kMethodNames[] = {
    {Method::Steepest, "steepest"},          {Method::Valley, "valley"},
    {Method::Minimum, "minimum"},            {Method::Slide, "slide"},
    {Method::Capped, "capped"},              {Method::TorchLrFinder, "torch_lr_finder"},
    {Method::Lightning, "lightning"},        {Method::FastaiValley, "fastai_valley"},
    {Method::FastaiSteep, "fastai_steep"},   {Method::FastaiMinimum, "fastai_minimum"},
    {Method::FastaiSlide, "fastai_slide"},
};
// Method's table, found by argument-dependent lookup: glue::enum_from_python checks a settings code
// against it (an enum used as a settings field gets one of these).
inline constexpr const auto& named_table(Method) { return kMethodNames; }

inline bool is_compat(Method m) { return static_cast<int>(m) >= 10; }

enum class SuggestStatus : int {
  Ok = 0,
  TooFewPoints = 1,    // not enough (finite) points for the rule
  AllNonFinite = 2,    // no finite loss at all
  NeverDecreased = 3,  // the smoothed loss never falls clearly below its starting level
};

inline constexpr Named<SuggestStatus> kSuggestStatusNames[] = {
    {SuggestStatus::Ok, "ok"},
    {SuggestStatus::TooFewPoints, "too_few_points"},
    {SuggestStatus::AllNonFinite, "all_nonfinite"},
    {SuggestStatus::NeverDecreased, "never_decreased"},
};

// A drop counts only when it exceeds kSignificantDrop x (1 + 1/sqrt(n - 2)) standard deviations of
// the noise left on the significance test's smoothed curve (n analysed points). On flat white-noise
// curves that curve's largest peak-to-later-minimum drop is below ~6.7 sd in 99% of the curves and
// below ~8.5 in 99.9% (20 to 300 points); the noise itself is estimated from n - 2 second
// differences, uncertain by about 1/sqrt(n - 2), which makes short curves' tails heavier: hence the
// factor. Measured false picks stay below 1% at every length from 8 points up.
inline constexpr double kSignificantDrop = 8.0;

// fastai's slide rule counts lr_diff and thresh in points of its default sweep: 100 points over
// 1e-7..10, i.e. 12.5 points per decade. pylrcore's slide reads the same numbers at that sampling
// (lr_diff=15 -> 1.2 decades, thresh=0.005 -> a slope difference of 0.0625 per decade), so its pick
// does not depend on how densely the sweep was sampled.
inline constexpr double kFastaiPointsPerDecade = 12.5;

struct SuggestOptions {
  Method method = Method::Steepest;
  // Own methods. beta <= 0 means "auto": an EMA window of about 5% of the curve (at least 3 points).
  double beta = -1.0;
  double diverge_factor = kDivergeFactor;  // <= 0 disables the divergence cut
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

template <class F>
void for_each_field(SuggestOptions& o, F&& f) {
  f("method", o.method);
  f("beta", o.beta);
  f("diverge_factor", o.diverge_factor);
  f("zone_lo", o.zone_lo);
  f("zone_hi", o.zone_hi);
  f("min_points", o.min_points);
  f("slide_lr_diff", o.slide_lr_diff);
  f("slide_thresh", o.slide_thresh);
  f("slide_adjust", o.slide_adjust);
  f("skip_start", o.skip_start);
  f("skip_end", o.skip_end);
  f("num_it", o.num_it);
}

struct Suggestion {
  SuggestStatus status = SuggestStatus::Ok;
  std::string reason;  // empty when Ok with full confidence; why, when Ok with low confidence
  // Ok, but the fall was not significant against the noise on its own (see suggest_own): the curve
  // corroborates it by diverging afterwards. The pick is then the minimum's (zone = the minimum).
  bool low_confidence = false;
  double lr = std::numeric_limits<double>::quiet_NaN();
  std::int64_t index = -1;  // index (into the input arrays) of the point the rule picked
  // Usable range (own methods only; -1 when unknown).
  std::int64_t zone_lo_index = -1, zone_hi_index = -1;
  std::int64_t min_index = -1;  // minimum of the smoothed loss
  std::int64_t cut_index = 0;   // points [0, cut_index) were analysed
  std::int64_t diverged_index = -1;  // first point past the divergence rule, -1 if none
  std::int64_t first_nonfinite_index = -1;
  double beta_used = 0.0;
  double noise = std::numeric_limits<double>::quiet_NaN();  // raw loss noise (sd per point), own methods
  double drop = std::numeric_limits<double>::quiet_NaN();   // smoothed drop, peak to minimum, own methods
  std::vector<double> smoothed;  // zero-phase smoothed loss on [0, cut_index), NaN after
  std::vector<double> slope;     // d smoothed / d ln(lr) on [0, cut_index), NaN after
};

// The scalar fields (the curves, smoothed and slope, cross separately).
template <class F>
void for_each_field(Suggestion& r, F&& f) {
  f("status", r.status);
  f("reason", r.reason);
  f("low_confidence", r.low_confidence);
  f("lr", r.lr);
  f("index", r.index);
  f("zone_lo_index", r.zone_lo_index);
  f("zone_hi_index", r.zone_hi_index);
  f("min_index", r.min_index);
  f("cut_index", r.cut_index);
  f("diverged_index", r.diverged_index);
  f("first_nonfinite_index", r.first_nonfinite_index);
  f("beta", r.beta_used);
  f("noise", r.noise);
  f("drop", r.drop);
}

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

// The longest strictly decreasing subsequence itself: its first and last index (the first one that
// reaches the longest length, as fastai's rule takes it). Patience sorting with back-pointers.
inline void longest_decrease(const double* y, std::size_t n, std::size_t& first, std::size_t& last) {
  std::vector<double> tails;             // tails[k]: largest last value of a decreasing run of length k+1
  std::vector<std::size_t> tail_index;   // where that run ends
  std::vector<std::size_t> previous(n);  // the element before i in the run that ends at i
  std::size_t best_len = 0;
  first = last = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = std::lower_bound(tails.begin(), tails.end(), y[i], [](double tail, double v) { return tail > v; });
    const std::size_t k = static_cast<std::size_t>(it - tails.begin());
    previous[i] = k > 0 ? tail_index[k - 1] : i;
    if (it == tails.end()) {
      tails.push_back(y[i]);
      tail_index.push_back(i);
    } else {
      *it = y[i];
      tail_index[k] = i;
    }
    if (k + 1 > best_len) {
      best_len = k + 1;
      last = i;
    }
  }
  first = last;
  for (std::size_t len = best_len; len > 1; --len) first = previous[first];
}

// The point whose log(lr) is nearest the middle, in log(lr), of [first, last]: halfway along the
// valley in decades, whatever the number of points in it.
inline std::size_t log_midpoint(const double* loglr, std::size_t first, std::size_t last) {
  const double middle = 0.5 * (loglr[first] + loglr[last]);
  std::size_t best = first;
  for (std::size_t i = first; i <= last; ++i)
    if (std::fabs(loglr[i] - middle) < std::fabs(loglr[best] - middle)) best = i;
  return best;
}

// fastai's slide rule read per decade of lr: r walks left from the last point, l is the point
// `window` (in ln lr) left of r; while the slopes (per ln lr) at r and l differ by more than
// `thresh`, the pick moves to l. The pick is kept inside the usable range [floor, ceiling]: left of
// it the curve is flat within its noise, where slopes differ by noise alone and the walk would run
// to the first point; right of it the loss has stopped falling, and a walk that stops at once
// (a slowly rising tail whose slopes agree) would pick next to the divergence. Returns -1 when the
// curve spans less than `window`.
inline std::int64_t slide_index_log(const double* slope, const double* loglr, std::size_t n, double window,
                                    double thresh, std::size_t floor, std::size_t ceiling) {
  std::size_t r = n - 1;
  std::int64_t l = static_cast<std::int64_t>(r);  // only ever moves left as r does: O(n) in all
  auto follow_r = [&] {
    while (l >= 0 && loglr[static_cast<std::size_t>(l)] > loglr[r] - window) --l;
  };
  follow_r();
  if (l < 0) return -1;
  const std::int64_t first = static_cast<std::int64_t>(floor);
  std::int64_t pick = l;
  while (l >= first && std::fabs(slope[r] - slope[static_cast<std::size_t>(l)]) > thresh) {
    pick = l;
    --r;  // r > l >= 0 here
    follow_r();
  }
  return std::min(std::max(pick, first), static_cast<std::int64_t>(ceiling));
}

// Noise of the raw losses, as a standard deviation per point: the median absolute second difference
// (x[i-1] - 2 x[i] + x[i+1] has sd sqrt(6) sd(x) for white noise) x 1.4826 / sqrt(6). Second
// differences cancel the curve's own (locally linear) trend, and the median ignores the few
// blow-up points a divergence cut can leave, which an RMS would let dominate.
inline double robust_noise(const double* y, std::size_t n) {
  if (n < 3) return 0.0;
  std::vector<double> d(n - 2);
  for (std::size_t i = 1; i + 1 < n; ++i) d[i - 1] = std::fabs(y[i - 1] - 2.0 * y[i] + y[i + 1]);
  const std::size_t mid = d.size() / 2;
  std::nth_element(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(mid), d.end());
  return 1.4826 * d[mid] / std::sqrt(6.0);
}

// The debiased EMA forwards, then backwards over that: smoothing without lag.
inline std::vector<double> zero_phase(const double* x, std::size_t n, double beta) {
  std::vector<double> forward(n), backward(n), out(n);
  ema(x, forward.data(), n, beta, EmaKind::Debiased);
  std::reverse(forward.begin(), forward.end());
  ema(forward.data(), backward.data(), n, beta, EmaKind::Debiased);
  std::reverse_copy(backward.begin(), backward.end(), out.begin());
  return out;
}

// The largest fall of y: from the last maximum before its minimum to that minimum.
inline double largest_drop(const std::vector<double>& y) {
  const std::size_t m = static_cast<std::size_t>(std::min_element(y.begin(), y.end()) - y.begin());
  return *std::max_element(y.begin(), y.begin() + static_cast<std::ptrdiff_t>(m) + 1) - y[m];
}

// What is left of white noise of sd 1 after the zero-phase EMA (forwards then backwards, weight
// 1-beta): its impulse response is (1-b)^2 b^|k| / (1-b^2), so the sd is sqrt(sum of squares) =
// sqrt((1-b) (1+b^2) / (1+b)^3).
inline double smoothed_noise_factor(double beta) {
  const double a = 1.0 - beta;
  return std::sqrt(a * (1.0 + beta * beta) / ((1.0 + beta) * (1.0 + beta) * (1.0 + beta)));
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

// pylrcore's own methods need strictly increasing lrs (slopes per ln lr); the compatibility modes take
// what their peer takes: non-decreasing (a finder that records an lr twice still gets its answer).
// The only check of a range test's lrs: suggest() in Python leaves it to this one pass.
inline void check_curve(const double* lrs, std::size_t n, bool strict = true) {
  require(n > 0, "lrs and losses are empty; record at least a few points of the range test");
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(lrs[i]))
      fail(describe_element("lrs", i, lrs[i]) + " is not finite; learning rates must be finite positive numbers");
    if (!(lrs[i] > 0)) fail(describe_element("lrs", i, lrs[i]) + " is not positive; learning rates must be > 0");
    if (i > 0 && (strict ? !(lrs[i] > lrs[i - 1]) : lrs[i] < lrs[i - 1]))
      fail(std::string(strict ? "lrs must be strictly increasing" : "lrs must be non-decreasing") + ", but " +
           describe_element("lrs", i, lrs[i]) + (strict ? " <= " : " < ") + describe_element("lrs", i - 1, lrs[i - 1]) +
           "; pass the lrs in the order the range test recorded them");
  }
}

inline double auto_beta(std::size_t n) {
  const double window = std::max(3.0, 0.05 * static_cast<double>(n));
  return 1.0 - 2.0 / (window + 1.0);
}

// The significance test's smoothing: a window of 10% of the curve, at least 5 points. Wider than
// the pick's (5%, at least 3): a real fall lasts, and averaging more points shrinks the noise it is
// compared with (on a 31-point sweep falling from 9.5 to 1 under 25% noise, the 3-point window
// read 6.8 sd of its noise, this one 8.1).
inline double significance_beta(std::size_t n) {
  const double window = std::max(5.0, 0.1 * static_cast<double>(n));
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
      if (diverged(causal[i], best, opt.diverge_factor)) {
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
  const std::vector<double> smooth = detail::zero_phase(raw, cut, beta);
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
  // Significant: above 1% of the level, and above what noise alone makes a smoothed curve drop.
  // Noise picks a peak and a later minimum among the wiggles of a flat curve, so without this a
  // curve where nothing was learned still got a confident lr. The test reads its own, wider
  // smoothing (significance_beta): a real fall is sustained over many points, noise is not.
  s.noise = detail::robust_noise(raw, cut);
  const double test_beta = significance_beta(cut);
  s.drop = detail::largest_drop(detail::zero_phase(raw, cut, test_beta));
  const double noise_sds = kSignificantDrop * (1.0 + 1.0 / std::sqrt(static_cast<double>(cut - 2)));
  const double significant = noise_sds * s.noise * detail::smoothed_noise_factor(test_beta);
  // The same number of sd of the noise left on the pick's own (narrower) smoothing: how far below
  // its peak that curve must fall to be out of its noise (the usable range's start, below).
  const double noise_drop = noise_sds * s.noise * detail::smoothed_noise_factor(beta);
  // Low confidence: the fall is short of the threshold but more than half of it, and the curve
  // then diverged -- a fall followed by an explosion is the range test's shape, seen through heavy
  // noise (small-batch regression: the per-batch loss varies by 50%). Refusing there leaves the
  // user with nothing where every peer answers; a pick flagged as unsure, derived from the
  // minimum, is more useful. Flat noise that never diverges still gets no suggestion.
  const bool shaped = m >= 2 && m > peak && drop > 0.01 * std::fabs(top);
  const bool diverged_after = s.diverged_index >= 0 || s.first_nonfinite_index >= 0;
  if (shaped && !(s.drop > significant) && s.drop > 0.5 * significant && diverged_after) {
    std::ostringstream r;
    r.precision(3);
    r << "low confidence: the loss fell by " << s.drop << ", " << noise_sds * s.drop / significant
      << " sd of its smoothed noise (a sure fall exceeds " << noise_sds
      << " sd), before it diverged at lr " << lrs[s.diverged_index >= 0 ? s.diverged_index : s.first_nonfinite_index]
      << "; the pick is derived from the minimum. Average several range tests or use a larger batch";
    s.low_confidence = true;
    s.reason = r.str();
  } else if (!shaped || !(s.drop > significant)) {
    std::ostringstream r;
    r.precision(3);
    r << "the smoothed loss never decreased clearly: its largest drop, " << s.drop
      << ", is within its noise (a drop must exceed " << std::max(significant, 0.01 * std::fabs(top))
      << ": 1% of the loss and " << noise_sds << " sd of the smoothed curve's noise)";
    if (s.diverged_index >= 0 || s.first_nonfinite_index >= 0)
      r << "; it " << (s.diverged_index >= 0 ? "diverged" : "became non-finite") << " at lr "
        << lrs[s.diverged_index >= 0 ? s.diverged_index : s.first_nonfinite_index]
        << " before falling: start from a smaller lr, or check the model, the data and the loss";
    else
      r << " up to the last lr, " << lrs[n - 1]
        << ": end_lr is too low (raise it, e.g. to 10) or the model cannot learn from this data";
    return detail::no_suggestion(std::move(s), SuggestStatus::NeverDecreased, r.str());
  }
  // The usable range starts once the loss is clearly below its noise level and stays there: after
  // the last point within max(zone_lo x drop, half the significant drop) of the peak. On a noisy
  // flat start the first point past zone_lo x drop alone lies among the noise's wiggles, decades
  // before the real fall; half the significant drop (about 4 sd of the smoothed noise) keeps the
  // steepest pick unbiased on barely significant drops, and "stays there" drops the wiggles that
  // dip below it and come back.
  const double start_fall = s.low_confidence ? drop : std::max(opt.zone_lo * drop, 0.5 * noise_drop);
  std::size_t lo = peak, hi = m;
  for (std::size_t i = peak; i <= m; ++i)
    if (smooth[i] > top - start_fall) lo = i + 1;
  // A user's beta near 0 leaves this curve's drop within its own noise while the wider test curve
  // passed: the range is then the minimum alone.
  lo = std::min(lo, m);
  for (std::size_t i = lo; i <= m; ++i)
    if (smooth[i] <= top - std::max(opt.zone_hi * drop, start_fall)) {
      hi = i;
      break;
    }
  s.zone_lo_index = static_cast<std::int64_t>(lo);
  s.zone_hi_index = static_cast<std::int64_t>(hi);

  // The steepest fall per log(lr) inside the usable range (steepest, and capped's first anchor).
  const auto steepest = [&] {
    return static_cast<std::int64_t>(lo + detail::argmin_nan_first(slope.data() + lo, hi - lo + 1));
  };
  std::int64_t idx = -1;
  const auto pick_steepest = [&] {
    idx = steepest();
    s.lr = lrs[idx];
  };
  const auto pick_minimum_over_10 = [&] {
    idx = static_cast<std::int64_t>(m);
    s.lr = lrs[m] / 10.0;
  };
  switch (opt.method) {
    case Method::Steepest:
      // Low confidence: the range is the minimum alone, whose lr sits at the divergence's edge.
      s.low_confidence ? pick_minimum_over_10() : pick_steepest();
      break;
    case Method::Minimum:
      pick_minimum_over_10();
      break;
    case Method::Capped:
      // Two anchors that fail in opposite places. Where learning only starts near the stability
      // limit (SGD), the steepest fall sits just below the divergence, too high; where the loss
      // keeps falling at large lrs (adaptive optimizers, convex models), the minimum is late and
      // minimum / 10 too high. The smaller of the two is chosen (bench/suggest_quality).
      pick_steepest();
      if (lrs[m] / 10.0 < s.lr) pick_minimum_over_10();
      break;
    case Method::Valley: {
      // fastai's longest valley, halfway along it in log(lr) (fastai: halfway in points).
      std::size_t first, last;
      detail::longest_decrease(smooth.data(), cut, first, last);
      idx = static_cast<std::int64_t>(detail::log_midpoint(loglr.data(), first, last));
      s.lr = lrs[idx];
      break;
    }
    case Method::Slide: {
      // fastai's numbers at its own sampling, turned into decades (ln lr) and a slope per ln lr.
      const double decade = std::log(10.0);
      const double window = static_cast<double>(opt.slide_lr_diff) / kFastaiPointsPerDecade * decade;
      const double thresh = opt.slide_thresh * kFastaiPointsPerDecade / decade;
      idx = detail::slide_index_log(slope.data(), loglr.data(), cut, window, thresh, lo, hi);
      if (idx < 0) {
        std::ostringstream r;
        r << "the slide rule compares slopes lr_diff / " << kFastaiPointsPerDecade << " = "
          << static_cast<double>(opt.slide_lr_diff) / kFastaiPointsPerDecade
          << " decades apart; the analysed curve spans " << (loglr[cut - 1] - loglr[0]) / decade
          << ": sweep a wider lr range or lower lr_diff";
        return detail::no_suggestion(std::move(s), SuggestStatus::TooFewPoints, r.str());
      }
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
  const bool own = opt.method == Method::Steepest || opt.method == Method::Valley || opt.method == Method::Minimum ||
                   opt.method == Method::Slide || opt.method == Method::Capped;
  check_curve(lrs, n, own);
  if (!(opt.zone_lo >= 0 && opt.zone_lo < opt.zone_hi && opt.zone_hi <= 1)) {
    std::ostringstream m;
    m << "zone must satisfy 0 <= lo < hi <= 1 (fractions of the total loss drop), got (" << opt.zone_lo << ", "
      << opt.zone_hi << ")";
    fail(m.str());
  }
  require(opt.slide_lr_diff >= 1, "lr_diff must be >= 1");
  if (!(std::isfinite(opt.slide_thresh) && opt.slide_thresh >= 0))
    fail("thresh must be a finite number >= 0, got " + std::to_string(opt.slide_thresh));
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
    case Method::Capped:
      return suggest_own(lrs, losses, n, opt);
  }
  fail("method is not a known suggestion method");
}

}  // namespace pylrcore
