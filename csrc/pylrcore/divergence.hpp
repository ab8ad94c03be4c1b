// The range test's divergence predicate: one rule, one meaning of "best", for every sweep --
// suggest()'s cut, the finder's stop (pylrcore.torch.finder calls it through the bindings), the device
// loss tracker (step/loss_track.hpp, host and CUDA). The long-run detector and the guard use their own
// rule on purpose (step/explosion.hpp: a healthy long run's loss legitimately rises past k x its best).
//
//   diverged  <=>  smoothed > best + (factor - 1) |best|
//
// "best" is the lowest smoothed loss of the sweep so far. Whether it includes this step's value does
// not matter: a value that is the new best cannot exceed it. For a positive best this is
// smoothed > factor x best (torch-lr-finder's, fastai's and Lightning's rule); the additive form
// keeps it meaningful where losses can be <= 0 (a log-likelihood, a loss with an offset), where
// factor x best would fire at once or never.
#pragma once
#include "pylrcore/hd.hpp"

namespace pylrcore {

PYLRCORE_HD inline double divergence_threshold(double best, double factor) {
  return best + (factor - 1.0) * (best < 0 ? -best : best);  // no <cmath> overloads on the device
}

PYLRCORE_HD inline bool diverged(double smoothed, double best, double factor) {
  return smoothed > divergence_threshold(best, factor);
}

}  // namespace pylrcore
