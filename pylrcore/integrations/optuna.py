"""Optuna: :func:`suggest_lr` sets a trial's lr with a short range test instead of sampling it
blindly, and :class:`DivergencePruner` prunes trials whose reported losses go NaN/Inf or explode.

>>> from pylrcore.integrations.optuna import DivergencePruner, suggest_lr        # doctest: +SKIP
>>> def objective(trial):                                                        # doctest: +SKIP
...     model = build(trial); opt = torch.optim.AdamW(model.parameters())
...     lr = suggest_lr(trial, model, opt, loss_fn, loader, num_iter=100)        # the optimizer now has it
...     for step, loss in train(model, opt):
...         trial.report(loss, step)
...         if trial.should_prune():
...             raise optuna.TrialPruned()
>>> study = optuna.create_study(pruner=DivergencePruner(optuna.pruners.MedianPruner()))  # doctest: +SKIP

Both work unchanged when several processes share one study through an Optuna storage (RDB or
``JournalStorage``): the finder's result travels as trial user attributes, and the pruner reads
only the trial it is asked about.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from . import require

_optuna = require(("optuna",), "optuna", "pylrcore.integrations.optuna")

from ..detect import Detector, Flag  # noqa: E402  (after the framework check: its error names the extra)
from ..torch.finder import FinderResult  # noqa: E402
from ._trial import curve_sample, range_test  # noqa: E402

__all__ = ["suggest_lr", "DivergencePruner", "ATTR_PREFIX"]

#: Prefix of the user attributes :func:`suggest_lr` writes (``trial.user_attrs["lr_finder/suggestion"]``, ...).
ATTR_PREFIX = "lr_finder/"


def suggest_lr(
    trial: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Optional[Callable[..., torch.Tensor]],
    train_loader: Any,
    *,
    multiplier: float = 1.0,
    curve_points: int = 50,
    **range_test_options: Any,
) -> float:
    """Run a range test (:meth:`pylrcore.LRFinder.range_test`, options passed on) and return
    ``suggestion * multiplier``, which is also set on ``optimizer`` (its groups keep their lr ratios).

    The model and optimizer are restored after the test, so training starts from the trial's own
    initial weights. The result is kept as user attributes of the trial, under :data:`ATTR_PREFIX`:
    ``suggestion``, ``lr`` (what was set), ``multiplier``, ``zone``, ``diagnosis``, ``stop_reason``
    and ``curve`` (``{"lrs": [...], "losses": [...]}``, at most ``curve_points`` points, non-finite
    losses as None). ``multiplier`` lets a sampler tune around the suggestion
    (``multiplier=trial.suggest_float("lr_multiplier", 0.3, 3, log=True)``).

    When the test finds no lr (say, the loss never fell), the attributes are still written and the
    trial is pruned (``optuna.TrialPruned`` with the diagnosis). A loss that is NaN at the very first
    step is a problem with the model or data, not the lr: the finder's ValueError propagates.
    """
    result, lr, multiplier, curve_points = range_test(model, optimizer, criterion, train_loader, multiplier,
                                                     curve_points, range_test_options)
    for name, value in _attributes(result, lr, multiplier, curve_points).items():
        trial.set_user_attr(ATTR_PREFIX + name, value)
    if lr is None:
        raise _optuna.TrialPruned(f"the LR range test found no lr: {result.diagnosis}")
    result.apply(optimizer, lr)  # the groups keep their lr ratios
    return lr


def _attributes(result: FinderResult, lr: Optional[float], multiplier: float, points: int) -> Dict[str, Any]:
    """JSON-safe values (every Optuna storage serialises user attributes as JSON)."""
    saved = result.to_dict()  # JSON-safe already (non-finite losses are None)
    return {
        "suggestion": saved["suggestion"],
        "lr": lr,
        "multiplier": multiplier,
        "zone": saved["zone"],
        "diagnosis": saved["diagnosis"],
        "stop_reason": saved["stop_reason"],
        "curve": curve_sample(saved, points),
    }


class DivergencePruner(_optuna.pruners.BasePruner):  # type: ignore[misc,name-defined]
    """Prune a trial whose reported values (losses) are non-finite or have exploded; for anything
    else ask ``pruner`` (e.g. ``MedianPruner()``), or never prune when it is None.

    The values reported so far (by step) go through a :class:`pylrcore.Detector`; the trial is
    pruned when the latest is NaN/Inf, or when the Detector's EXPLOSION state holds at the latest
    one: the smoothed value is above ``explode_factor`` x its best (it needs 10 reports before it
    can say so). ``beta`` is the smoothing of the reported values (0.9: about 10 reports; lower it
    for few, noisy reports); other :class:`~pylrcore.Detector` settings pass through
    ``detector_options``. For a study that maximises its objective only non-finite values are
    pruned (a rising accuracy is no explosion).

    The values are read afresh from the trial at every call (one native pass over them), so the
    decision needs no state and is the same whichever process of a shared study runs the trial.
    ``reasons[trial.number]`` says why a trial was pruned here (e.g. to store it as a user attribute
    before raising ``TrialPruned``).
    """

    def __init__(self, pruner: Any = None, *, explode_factor: float = 4.0, beta: float = 0.9,
                 **detector_options: Any) -> None:
        if pruner is not None and not isinstance(pruner, _optuna.pruners.BasePruner):
            raise TypeError(f"pruner must be an optuna pruner or None, got {type(pruner).__name__}")
        self.pruner = pruner
        self.detector_options = dict(detector_options, explode_factor=explode_factor, beta=beta)
        Detector(**self.detector_options)  # settings are checked now, not at the first report
        self.reasons: Dict[int, str] = {}  # trial number -> why this pruner (in this process) pruned it

    def prune(self, study: Any, trial: Any) -> bool:
        values = [v for _, v in sorted(trial.intermediate_values.items())]
        reason = self.divergence(values, minimize=_minimizes(study))
        if reason:
            self.reasons[trial.number] = reason
            return True
        return bool(self.pruner.prune(study, trial)) if self.pruner is not None else False

    def divergence(self, values: Any, *, minimize: bool = True) -> str:
        """Why ``values`` (in step order) count as diverged at their latest one, or "" if they do not."""
        if len(values) == 0:
            return ""
        reported = np.asarray(values, dtype=np.float64)
        latest = float(reported[-1])
        if not math.isfinite(latest):
            return f"non-finite value ({latest}) at report {len(values) - 1}"
        if not minimize:
            return ""
        finite = reported[np.isfinite(reported)]  # earlier non-finite ones were not pruned
        detector = Detector(**self.detector_options)
        verdicts = detector.update_many(finite)
        if verdicts.flags[-1] & np.uint32(int(Flag.EXPLOSION)):
            return (f"exploded: smoothed value {verdicts.smoothed[-1]:.4g} above {detector.stats['explode_at']:.4g} "
                    f"({self.detector_options['explode_factor']:g} x the best, {verdicts.best[-1]:.4g})")
        return ""


def _minimizes(study: Any) -> bool:
    try:
        return bool(study.direction == _optuna.study.StudyDirection.MINIMIZE)
    except RuntimeError:  # a multi-objective study (Optuna does not prune those)
        return True
