// Reduce-on-plateau: a metric-driven learning-rate reducer that takes the same decisions as
// torch.optim.lr_scheduler.ReduceLROnPlateau (torch 2.13), as a small O(groups) state machine.
//
// step(metric), in torch's order:
//   better = a <  best*(1-thr)  (min, rel)      a <  best-thr  (min, abs)
//            a >  best*(1+thr)  (max, rel)      a >  best+thr  (max, abs)
//   (best starts at +inf for min, -inf for max; the products are formed exactly as torch forms them)
//   if better: best = a, bad = 0  else: bad += 1
//   if cooldown_counter > 0: cooldown_counter -= 1, bad = 0      (bad epochs in cooldown are ignored)
//   if bad > patience: reduce; cooldown_counter = cooldown; bad = 0
// A NaN metric is never better (every comparison with NaN is false), so it counts as a bad epoch,
// exactly as in torch; +-inf metrics are compared like any other value.
//
// A reduction can be used two ways:
//  (a) alone, reproducing torch: each tracked group lr becomes new = max(old*factor, min_lr_g), and
//      the change is applied only if old - new > eps. Once a change is skipped for a group, every later
//      one is too (same old, same new), so replaying k reductions from the base lrs stops early.
//  (b) as a multiplier on another schedule: each group's scale s_g (1 at the start) is multiplied by
//      factor at a reduction; the caller computes lr_g = max(schedule_g(t)*s_g, min_lr_g). Given the
//      schedule's lrs at that step, torch's eps rule applies to lr_g: a group whose lr would change by
//      no more than eps keeps its scale. These scales are the only per-group lr scale in pylrcore (the
//      torch Scheduler reads them; groups added to the optimizer after it are reduced on their own lr).
// Misuse throws std::invalid_argument naming the setting (ValueError in Python).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "pylrcore/common.hpp"

namespace pylrcore {

struct PlateauConfig {
  bool maximize = false;     // mode 'max' (else 'min')
  double factor = 0.1;       // in (0, 1)
  std::int64_t patience = 10;
  double threshold = 1e-4;   // finite, >= 0
  bool absolute = false;     // threshold_mode 'abs' (else 'rel')
  std::int64_t cooldown = 0;
  double eps = 1e-8;         // finite, >= 0
};

template <class F>
void for_each_field(PlateauConfig& c, F&& f) {
  f("maximize", c.maximize);
  f("factor", c.factor);
  f("patience", c.patience);
  f("threshold", c.threshold);
  f("absolute", c.absolute);
  f("cooldown", c.cooldown);
  f("eps", c.eps);
}

inline void check_plateau_config(const PlateauConfig& c) {
  auto bad = [](const char* name, double value, const char* want) {
    std::ostringstream s;
    s << name << " must be " << want << ", got " << value;
    fail(s.str());
  };
  if (!(c.factor > 0.0 && c.factor < 1.0))
    bad("factor", c.factor, "in the open interval (0, 1) (the lr is multiplied by it; e.g. 0.1 or 0.5)");
  if (c.patience < 0) bad("patience", static_cast<double>(c.patience), ">= 0 (bad epochs tolerated; e.g. 10)");
  if (c.cooldown < 0) bad("cooldown", static_cast<double>(c.cooldown), ">= 0 (epochs to wait after a reduction)");
  if (!(c.threshold >= 0.0 && std::isfinite(c.threshold)))
    bad("threshold", c.threshold, "a finite number >= 0 (e.g. 1e-4)");
  if (!(c.eps >= 0.0 && std::isfinite(c.eps))) bad("eps", c.eps, "a finite number >= 0 (e.g. 1e-8)");
}

inline void check_min_lrs(const std::vector<double>& min_lrs) {
  for (std::size_t i = 0; i < min_lrs.size(); ++i)
    if (!(min_lrs[i] >= 0.0 && std::isfinite(min_lrs[i])))
      fail(describe_element("min_lr", i, min_lrs[i]) + " must be a finite number >= 0 (a lower bound on the lr)");
}

// Everything needed to resume exactly (the tracked lrs of use (a) and the scales of use (b) are
// per-group lists, kept beside it).
struct PlateauState {
  double best = std::numeric_limits<double>::infinity();  // +inf (min) or -inf (max) before the first step
  std::int64_t num_bad_epochs = 0;
  std::int64_t cooldown_counter = 0;
  std::int64_t last_epoch = 0;      // steps taken (torch's last_epoch)
  std::int64_t num_reductions = 0;  // reductions so far
};

template <class F>
void for_each_field(PlateauState& s, F&& f) {
  f("best", s.best);
  f("num_bad_epochs", s.num_bad_epochs);
  f("cooldown_counter", s.cooldown_counter);
  f("last_epoch", s.last_epoch);
  f("num_reductions", s.num_reductions);
}

class Plateau {
 public:
  // min_lrs: one per group, or a single value used for every group (a scalar min_lr).
  Plateau(const PlateauConfig& config, std::vector<double> min_lrs) : config_(config), min_lrs_(std::move(min_lrs)) {
    check_plateau_config(config_);
    require(!min_lrs_.empty(), "min_lr must be a number or a non-empty list of numbers, one per param group");
    check_min_lrs(min_lrs_);
    reset();
  }

  const PlateauConfig& config() const { return config_; }
  const PlateauState& state() const { return state_; }
  const std::vector<double>& min_lrs() const { return min_lrs_; }
  double min_lr(std::size_t group) const { return of_group(min_lrs_, group, "min_lr", "min_lr was given for"); }

  // Back to the start (counters, best, scale; tracked lrs back to their base values).
  void reset() {
    state_ = PlateauState{};
    state_.best = worst();
    lrs_ = base_lrs_;
    scales_.assign(min_lrs_.size(), 1.0);  // one shared scale until the groups are known
  }

  bool is_better(double a, double best) const {
    const double t = config_.threshold;
    if (!config_.maximize) return config_.absolute ? a < best - t : a < best * (1.0 - t);
    return config_.absolute ? a > best + t : a > best * (t + 1.0);
  }
  bool in_cooldown() const { return state_.cooldown_counter > 0; }

  // One epoch's metric; returns whether a reduction happened at this step. schedule_lrs (use (b),
  // may be empty): the other schedule's lrs now, one per group, so that a reduction follows the eps
  // rule per group; without them every scale takes the factor.
  bool step(double metric, const std::vector<double>& schedule_lrs = {}) {
    if (!schedule_lrs.empty()) check_schedule_lrs(schedule_lrs);  // before any state changes
    ++state_.last_epoch;
    if (is_better(metric, state_.best)) {
      state_.best = metric;
      state_.num_bad_epochs = 0;
    } else {
      ++state_.num_bad_epochs;
    }
    if (in_cooldown()) {
      --state_.cooldown_counter;
      state_.num_bad_epochs = 0;
    }
    if (state_.num_bad_epochs > config_.patience) {
      reduce(schedule_lrs);
      state_.cooldown_counter = config_.cooldown;
      state_.num_bad_epochs = 0;
      return true;
    }
    return false;
  }

  // Use (a): one reduction of one lr, torch's rule.
  double reduce_lr(double old_lr, std::size_t group) const {
    const double floor = min_lr(group);
    const double product = old_lr * config_.factor;
    const double new_lr = floor > product ? floor : product;  // Python's max(product, floor)
    return old_lr - new_lr > config_.eps ? new_lr : old_lr;
  }

  // Use (a): track these base lrs from now on; the reductions made so far are replayed on them.
  void set_base_lrs(std::vector<double> base) {
    check_groups(base.size(), "base_lrs");
    for (std::size_t i = 0; i < base.size(); ++i)
      if (!(base[i] >= 0.0 && std::isfinite(base[i])))
        fail(describe_element("base_lrs", i, base[i]) + " must be a finite number >= 0");
    std::vector<double> lrs = base;
    for (std::size_t g = 0; g < lrs.size(); ++g) {
      for (std::int64_t k = 0; k < state_.num_reductions; ++k) {
        const double next = reduce_lr(lrs[g], g);
        if (next == lrs[g]) break;  // a skipped change is skipped forever after
        lrs[g] = next;
      }
    }
    base_lrs_ = std::move(base);
    lrs_ = std::move(lrs);
  }
  bool tracking() const { return !base_lrs_.empty(); }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  const std::vector<double>& lrs() const { return lrs_; }

  // Use (b): lr_g = max(schedule_lr * scale_g, min_lr_g).
  double scaled_lr(double schedule_lr, std::size_t group) const {
    const double floor = min_lr(group);
    const double product = schedule_lr * scale(group);
    return floor > product ? floor : product;
  }
  double scale(std::size_t group) const { return of_group(scales_, group, "scale", "the plateau knows"); }
  // One entry shared by every group, or one per group once the groups are known.
  const std::vector<double>& scales() const { return scales_; }

  // Restore a checkpoint; lrs (possibly empty when base_lrs is) are the tracked lrs at that point,
  // scales the use-(b) scales (one shared entry, or one per group).
  void set_state(const PlateauState& s, std::vector<double> base_lrs, std::vector<double> lrs,
                 std::vector<double> scales) {
    require(s.num_bad_epochs >= 0 && s.cooldown_counter >= 0 && s.last_epoch >= 0 && s.num_reductions >= 0,
            "state: num_bad_epochs, cooldown_counter, last_epoch and num_reductions must be >= 0");
    require(s.cooldown_counter <= config_.cooldown, "state: cooldown_counter must be <= cooldown");
    require(!scales.empty(), "state: scales must hold one entry, or one per param group");
    if (scales.size() != 1) check_groups(scales.size(), "state: scales");
    for (double v : scales) require(v >= 0.0 && v <= 1.0, "state: scales must be in [0, 1]");
    require(!std::isnan(s.best), "state: best must not be NaN");
    require(base_lrs.size() == lrs.size(), "state: base_lrs and lrs must have the same length");
    if (!base_lrs.empty()) check_groups(base_lrs.size(), "state: base_lrs");
    for (std::size_t i = 0; i < lrs.size(); ++i)
      require(lrs[i] >= 0.0 && std::isfinite(lrs[i]) && std::isfinite(base_lrs[i]),
              "state: base_lrs and lrs must be finite numbers >= 0");
    state_ = s;
    base_lrs_ = std::move(base_lrs);
    lrs_ = std::move(lrs);
    scales_ = std::move(scales);
  }

 private:
  // A per-group list's entry: one entry is shared by every group. (A group index past the list is
  // misuse from a binding, not a silent out-of-bounds read.)
  static double of_group(const std::vector<double>& values, std::size_t group, const char* name, const char* known) {
    if (values.size() == 1) return values[0];
    if (group >= values.size()) {
      std::ostringstream m;
      m << "group " << group << " has no " << name << " (" << known << " " << values.size() << " groups)";
      fail(m.str());
    }
    return values[group];
  }
  double worst() const {
    return config_.maximize ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  void check_groups(std::size_t n, const char* what) const {
    if (n == 0) fail(std::string(what) + " must hold one lr per param group, got an empty list");
    if (min_lrs_.size() != 1 && n != min_lrs_.size()) {
      std::ostringstream s;
      s << what << " has " << n << " entries but min_lr was given for " << min_lrs_.size()
        << " param groups; pass one entry per group";
      fail(s.str());
    }
  }
  void check_schedule_lrs(const std::vector<double>& schedule_lrs) const {
    check_groups(schedule_lrs.size(), "schedule_lrs");
    if (scales_.size() != 1 && scales_.size() != schedule_lrs.size()) {
      std::ostringstream m;
      m << "schedule_lrs has " << schedule_lrs.size() << " entries but the plateau scales " << scales_.size()
        << " param groups; pass one entry per group";
      fail(m.str());
    }
    for (std::size_t i = 0; i < schedule_lrs.size(); ++i)
      if (!(schedule_lrs[i] >= 0.0 && std::isfinite(schedule_lrs[i])))
        fail(describe_element("schedule_lrs", i, schedule_lrs[i]) + " must be a finite number >= 0");
  }
  void reduce(const std::vector<double>& schedule_lrs) {
    ++state_.num_reductions;
    for (std::size_t g = 0; g < lrs_.size(); ++g) lrs_[g] = reduce_lr(lrs_[g], g);
    if (schedule_lrs.empty()) {
      for (double& s : scales_) s *= config_.factor;
      return;
    }
    if (scales_.size() == 1) scales_.assign(schedule_lrs.size(), scales_[0]);  // the groups are known now
    for (std::size_t g = 0; g < scales_.size(); ++g) {
      const double now = scaled_lr(schedule_lrs[g], g);
      if (reduce_lr(now, g) != now) scales_[g] *= config_.factor;  // torch's eps rule, on the lr it sets
    }
  }

  PlateauConfig config_;
  std::vector<double> min_lrs_;
  PlateauState state_{};
  std::vector<double> base_lrs_;  // empty: not tracking lrs (use (b) only)
  std::vector<double> lrs_;
  std::vector<double> scales_;  // use (b)
};

}  // namespace pylrcore
