"""Ray Tune: :func:`suggest_lr` sets a trial's lr with a short range test, :func:`report` adds the
guard's verdict to each result, :class:`DivergenceStopper` stops trials whose loss goes NaN/Inf or
explodes, and :func:`search_space` tunes a multiplier around the suggestion. Same meaning as the
Optuna integration (:mod:`pylrcore.integrations.optuna`).

>>> from ray import tune                                                          # doctest: +SKIP
>>> from pylrcore.integrations.ray import DivergenceStopper, report, search_space, suggest_lr  # doctest: +SKIP
>>> def trainable(config):                                                        # doctest: +SKIP
...     model = build(config); opt = torch.optim.AdamW(model.parameters())
...     suggest_lr(model, opt, loss_fn, loader, multiplier=config["lr_multiplier"])  # opt now has it
...     for step, loss in train(model, opt):
...         report({"loss": loss})                         # + guard/* and lr_finder/* metrics
>>> tuner = tune.Tuner(trainable, param_space=search_space(),                     # doctest: +SKIP
...     tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=ASHAScheduler()),
...     run_config=tune.RunConfig(stop=DivergenceStopper("loss")))

Nothing here talks to the cluster beyond ``tune.report`` and ``tune.get_context``, so the same
code runs on one machine or on a multi-node cluster (``ray start --head`` / ``--address``): the
range test runs inside each trial, on the trial's worker, and its result travels in the trial's
results; the stopper runs in the driver and reads only those results.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from . import require

tune = require(("ray.tune",), "ray", "pylrcore.integrations.ray")

from .._checks import check_real  # noqa: E402  (after the framework check)
from ..detect import Detector, Flag  # noqa: E402
from ..torch.finder import FinderResult  # noqa: E402
from ._trial import curve_sample, range_test  # noqa: E402

__all__ = ["suggest_lr", "report", "search_space", "DivergenceStopper", "TrialGuard", "RangeTestFailed",
           "ATTR_PREFIX", "GUARD_PREFIX"]

#: Prefix of the range test's metrics in a trial's results (``lr_finder/suggestion``, ...): the
#: names of the Optuna integration's user attributes.
ATTR_PREFIX = "lr_finder/"
#: Prefix of the guard's metrics (``guard/diverged``, ``guard/events``, ``guard/nonfinite_loss``, ...).
GUARD_PREFIX = "guard/"

_KINDS = {Flag.NONFINITE: "nonfinite_loss", Flag.SPIKE: "loss_spike", Flag.EXPLOSION: "explosion"}


class RangeTestFailed(RuntimeError):
    """The range test found no lr (``diagnosis`` says why): the trial cannot start. Optuna prunes
    such a trial; in Tune it ends in ERROR with this message (``guard.range_test`` has the result)."""

    def __init__(self, diagnosis: str) -> None:
        super().__init__(f"the LR range test found no lr: {diagnosis}")
        self.diagnosis = diagnosis

    def __reduce__(self) -> Any:  # Ray ships it between processes: rebuild from the diagnosis, not the message
        return (type(self), (self.diagnosis,))


def _divergence(detector: Detector, value: float, minimize: bool) -> Tuple[str, int]:
    """Why ``value`` (the next reported loss) counts as diverged, or ""; and the detector states that
    began with it (the detector is updated with finite values only, as the Optuna pruner does)."""
    if not math.isfinite(value):
        return f"non-finite loss ({value})", int(Flag.NONFINITE)
    verdict = detector.update(value)
    if minimize and verdict.flags & Flag.EXPLOSION:
        return f"exploded: smoothed loss {verdict.smoothed:.4g} above {detector.stats['explode_at']:.4g}", int(verdict.onset)
    return "", int(verdict.onset)


class TrialGuard:
    """One trial's guard state, in the trial's process: the range test's metrics waiting for the
    next result, and a :class:`~pylrcore.Detector` on the reported losses (``beta`` 0.9 and
    ``explode_factor`` 4, as :class:`DivergencePruner` in the Optuna integration).

    :func:`report` and :func:`suggest_lr` use one per trial automatically; a class ``Trainable``
    keeps its own (``self.guard = TrialGuard()``) and returns ``{**metrics, **self.guard.metrics(loss)}``
    from ``step()``.
    """

    def __init__(self, *, explode_factor: float = 4.0, beta: float = 0.9, **detector_options: Any) -> None:
        self.detector = Detector(explode_factor=explode_factor, beta=beta, **detector_options)
        self.range_test: Dict[str, Any] = {}  # lr_finder/* scalars: in every result
        self._curve: Optional[Dict[str, Any]] = None  # lr_finder/curve: in the first result only
        self.counts = {kind: 0 for kind in _KINDS.values()}
        self.reason = ""  # why the loss counts as diverged ("" while it does not)

    def record(self, result: FinderResult, lr: Optional[float], multiplier: float, points: int) -> None:
        saved = result.to_dict()  # JSON-safe: non-finite losses are None
        zone = saved["zone"] or [None, None]
        self.range_test = {
            ATTR_PREFIX + "suggestion": saved["suggestion"], ATTR_PREFIX + "lr": lr,
            ATTR_PREFIX + "multiplier": multiplier, ATTR_PREFIX + "zone_low": zone[0],
            ATTR_PREFIX + "zone_high": zone[1], ATTR_PREFIX + "diagnosis": saved["diagnosis"],
            ATTR_PREFIX + "stop_reason": saved["stop_reason"],
        }
        self._curve = curve_sample(saved, points)

    def metrics(self, loss: Any) -> Dict[str, Any]:
        """The guard's metrics after ``loss`` (this step's training loss), plus the range test's."""
        if not self.reason:  # after the divergence the trial is over: nothing more to count
            self.reason, onset = _divergence(self.detector, float(loss), minimize=True)
            for flag, kind in _KINDS.items():
                if onset & int(flag):
                    self.counts[kind] += 1
        out: Dict[str, Any] = {GUARD_PREFIX + "diverged": int(bool(self.reason)),
                               GUARD_PREFIX + "events": sum(self.counts.values()),
                               **{GUARD_PREFIX + k: v for k, v in self.counts.items()}, **self.range_test}
        if self._curve is not None:
            out[ATTR_PREFIX + "curve"] = self._curve
            self._curve = None
        return out


_guards: Dict[str, TrialGuard] = {}


def trial_guard() -> TrialGuard:
    """The :class:`TrialGuard` of the current Tune trial (one per trial id in this process)."""
    try:
        key = str(tune.get_context().get_trial_id())
    except Exception:  # outside a Tune session (a unit test, a debug run)
        key = ""
    if key not in _guards:
        _guards[key] = TrialGuard()
    return _guards[key]


def suggest_lr(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Optional[Callable[..., torch.Tensor]],
    train_loader: Any,
    *,
    multiplier: float = 1.0,
    curve_points: int = 50,
    guard: Optional[TrialGuard] = None,
    **range_test_options: Any,
) -> float:
    """Run a range test (:meth:`pylrcore.LRFinder.range_test`, options passed on) inside a trial and
    return ``suggestion * multiplier``, which is also set on ``optimizer`` (groups keep their ratios).

    The model and optimizer are restored after the test. The result goes into the trial's next
    result (through :func:`report`, or ``guard.metrics`` for a class Trainable) under
    :data:`ATTR_PREFIX`: ``suggestion``, ``lr``, ``multiplier``, ``zone_low``/``zone_high``,
    ``diagnosis``, ``stop_reason`` in every result, ``curve`` (at most ``curve_points`` points) in
    the first. When the test finds no lr, :class:`RangeTestFailed` is raised (Optuna's integration
    prunes there; Tune has no pruned state for a trial that never reported).
    """
    result, lr, multiplier, curve_points = range_test(model, optimizer, criterion, train_loader, multiplier,
                                                     curve_points, range_test_options)
    guard = guard if guard is not None else trial_guard()
    guard.record(result, lr, multiplier, curve_points)
    if lr is None:
        raise RangeTestFailed(result.diagnosis)
    result.apply(optimizer, lr)
    return lr


def report(metrics: Dict[str, Any], *, loss_key: str = "loss", checkpoint: Any = None,
           guard: Optional[TrialGuard] = None) -> str:
    """``tune.report(metrics)`` with the guard's metrics added (``guard/diverged``, ``guard/events``
    and a count per kind, and the range test's ``lr_finder/*``); ``metrics`` themselves pass through
    unchanged, so ASHA, PBT and median stopping see what they expect. Returns why the loss counts as
    diverged ("" while it does not), for a trainable that wants to end itself at once."""
    if loss_key not in metrics:
        raise KeyError(f"metrics has no {loss_key!r}: pass loss_key= the name of the training loss")
    guard = guard if guard is not None else trial_guard()
    extra = guard.metrics(metrics[loss_key])
    tune.report({**extra, **metrics}, checkpoint=checkpoint)
    return guard.reason


def search_space(low: float = 0.3, high: float = 3.0, *, name: str = "lr_multiplier") -> Dict[str, Any]:
    """``{name: tune.loguniform(low, high)}``: a multiplier of the range test's suggestion, for
    :func:`suggest_lr`'s ``multiplier`` (the Optuna integration's ``trial.suggest_float("lr_multiplier",
    low, high, log=True)``). Merge it into a ``param_space``."""
    lo, hi = check_real(low, "low"), check_real(high, "high")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < low < high, got {low!r} and {high!r}")
    return {name: tune.loguniform(lo, hi)}


class DivergenceStopper(tune.Stopper):  # type: ignore[misc,name-defined]
    """A ``tune.Stopper`` that stops a trial whose ``metric`` (a loss) is NaN/Inf, or whose smoothed
    value has exploded (above ``explode_factor`` x its best; the same rule and defaults as the
    Optuna integration's ``DivergencePruner``), or whose result says ``guard/diverged``. Everything
    else is left to Tune's schedulers (ASHA, PBT, median stopping). ``mode="max"`` (a metric to
    maximise) stops on non-finite values only.

    It runs in the driver and keeps one O(1) detector per trial; ``reasons[trial_id]`` says why it
    stopped a trial.
    """

    def __init__(self, metric: str = "loss", *, mode: str = "min", explode_factor: float = 4.0, beta: float = 0.9,
                 **detector_options: Any) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode = metric, mode
        self.detector_options = dict(detector_options, explode_factor=explode_factor, beta=beta)
        Detector(**self.detector_options)  # settings are checked now, not at the first result
        self._detectors: Dict[str, Detector] = {}
        self.reasons: Dict[str, str] = {}

    def __call__(self, trial_id: str, result: Dict[str, Any]) -> bool:
        if trial_id in self.reasons:
            return True
        reason = ""
        if result.get(GUARD_PREFIX + "diverged"):
            reason = "the trial's guard reported divergence"
        elif self.metric in result and result[self.metric] is not None:
            detector = self._detectors.setdefault(trial_id, Detector(**self.detector_options))
            reason, _ = _divergence(detector, float(result[self.metric]), minimize=self.mode == "min")
        if reason:
            self.reasons[trial_id] = reason
            self._detectors.pop(trial_id, None)
        return bool(reason)

    def stop_all(self) -> bool:
        return False
