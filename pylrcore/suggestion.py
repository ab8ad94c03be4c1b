"""Suggest a learning rate, and the usable range, from a range-test curve.

pylrcore's methods analyse the curve the same way (see ``csrc/pylrcore/suggestion.hpp``): cut at the
first non-finite loss and where the smoothed loss passes ``diverge_factor`` (:data:`DIVERGE_FACTOR`)
x its running minimum, smooth without lag (a debiased EMA forwards, then backwards), differentiate
with respect to ``log(lr)`` (numpy.gradient's second-order non-uniform rule), check that the loss
fell significantly (the largest fall of a wider zero-phase smoothing must exceed about 8 standard
deviations of that curve's noise, estimated robustly from the raw losses, and 1% of the loss;
otherwise ``lr`` is None, status ``"never_decreased"``; a fall above half that threshold that the
curve then confirms by diverging gives a pick with ``confidence == "low"`` and a reason), and find
the usable range:
from where the smoothed loss has fallen ``zone[0]`` of its total drop (and clearly below its noise
level) to where it has fallen ``zone[1]`` of it. Every rule works per decade of lr, not per point:
the same curve sampled with 100 or 1000 points gives the same answer.

- ``"capped"`` (default, :data:`DEFAULT_METHOD`): the steepest descent, capped at a tenth of the
  lr at the smoothed loss's minimum. The steepest fall sits too high where learning only starts near
  the stability limit (SGD), minimum / 10 too high where the loss keeps falling at large lrs
  (adaptive optimizers, convex models); the smaller of the two is chosen. Measured against the
  peers on real tasks in ``bench/suggest_quality`` (bench/README.md).
- ``"steepest"``: steepest descent of the smoothed loss per unit of log(lr), inside the range.
- ``"valley"``: fastai's longest-valley rule on the smoothed curve, halfway along the valley in log(lr).
- ``"minimum"``: lr at the minimum of the smoothed loss, divided by 10.
- ``"slide"``: fastai's interval slide rule on the smoothed curve's slope per log(lr), with
  ``lr_diff`` and ``thresh`` read at fastai's default sampling (12.5 points per decade: 15 points
  = 1.2 decades), its pick kept inside the usable range.

Compatibility modes return exactly what a peer returns on the same recorded (already smoothed)
curve, float32 rounding included: ``"torch_lr_finder"`` (``LRFinder.plot(suggest_lr=True)``,
skips 10/5), ``"lightning"`` (``_LRFinder.suggestion()``, skips 10/1), and ``"fastai_valley"``,
``"fastai_steep"``, ``"fastai_minimum"``, ``"fastai_slide"`` (``Learner.lr_find`` post-processing,
``[num_it//10:-5]`` and the NaN cut, then the function).

When no lr can be suggested the result says why (``reason``) instead of raising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import numpy as np

from ._checks import FloatArray, as_curve, check_beta, check_int, check_real, same_length
from ._native import _core

__all__ = ["suggest", "Suggestion", "SweepStop", "gradient", "METHODS", "COMPAT_METHODS", "DIVERGE_FACTOR", "DEFAULT_METHOD"]

#: pylrcore's one divergence factor: a range test has diverged where its smoothed loss exceeds this
#: many times its running minimum (4, as fastai and Lightning; torch-lr-finder stops at 5). The
#: default of :func:`suggest`, of ``LRFinder.range_test(diverge_th=)``, of the CLI, the demo and
#: the plot; defined once, in the core (``kDivergeFactor`` in ``csrc/pylrcore/suggestion.hpp``).
DIVERGE_FACTOR: float = float(_core.DIVERGE_FACTOR)

METHODS = ("capped", "steepest", "valley", "minimum", "slide")
#: The rule every default suggestion uses: suggest(), range_test, the CLI, the integrations, the plot.
DEFAULT_METHOD = "capped"
COMPAT_METHODS = (
    "torch_lr_finder",
    "lightning",
    "fastai_valley",
    "fastai_steep",
    "fastai_minimum",
    "fastai_slide",
)
_METHOD_CODES = {m.name: m for m in _core.SuggestMethod}  # codes and names defined once, in the core
_STATUS = {int(s): s.name for s in _core.SuggestStatus}


def _opt_index(i: int) -> Optional[int]:
    return None if i < 0 else int(i)


def _opt_float(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Suggestion:
    """What a suggestion rule concluded about a range-test curve.

    ``lr`` is None (and ``reason`` says why) when no suggestion can be made. ``zone`` is the usable
    range ``(lo, hi)`` of learning rates, for pylrcore's own methods.
    """

    lr: Optional[float]
    method: str
    zone: Optional[Tuple[float, float]]
    reason: str
    status: str
    index: Optional[int]
    zone_indices: Optional[Tuple[int, int]]
    min_index: Optional[int]
    diverged_at: Optional[int]
    first_nonfinite: Optional[int]
    analysed: int
    beta: Optional[float]
    #: The raw losses' noise (robust sd per point) and the smoothed drop the significance test used
    #: (pylrcore's own methods; None for the compatibility modes or when the curve ended too early).
    noise: Optional[float]
    drop: Optional[float]
    #: "high", or "low" when the fall alone was within twice its noise threshold and the curve's
    #: divergence afterwards corroborated it (``reason`` says so); None when there is no pick.
    confidence: Optional[str]
    lrs: FloatArray = field(repr=False, compare=False)
    losses: FloatArray = field(repr=False, compare=False)
    smoothed: Optional[FloatArray] = field(repr=False, compare=False)
    slope: Optional[FloatArray] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.lr is not None

    def __repr__(self) -> str:
        if not self.ok:
            return f"Suggestion(lr=None, method={self.method!r}, status={self.status!r}, reason={self.reason!r})"
        zone = f"({self.zone[0]:.3g}, {self.zone[1]:.3g})" if self.zone else "None"
        unsure = ", confidence='low'" if self.confidence == "low" else ""
        return f"Suggestion(lr={self.lr:.4g}, zone={zone}, method={self.method!r}, index={self.index}{unsure})"

    def __str__(self) -> str:
        if not self.ok:
            return f"no suggestion ({self.method}): {self.reason}"
        text = f"suggested lr {self.lr:.3g} ({self.method})"
        if self.zone:
            text += f", usable range {self.zone[0]:.3g} to {self.zone[1]:.3g}"
        if self.diverged_at is not None:
            text += f"; loss diverged at lr {self.lrs[self.diverged_at]:.3g}"
        elif self.first_nonfinite is not None:
            text += f"; loss became non-finite at lr {self.lrs[self.first_nonfinite]:.3g}"
        if self.confidence == "low":
            text += f" ({self.reason})"
        return text


def suggest(
    lrs: Any,
    losses: Any,
    method: str = DEFAULT_METHOD,
    *,
    beta: Optional[float] = None,
    diverge_factor: float = DIVERGE_FACTOR,
    zone: Tuple[float, float] = (0.1, 0.9),
    min_points: int = 5,
    skip_start: Optional[int] = None,
    skip_end: Optional[int] = None,
    num_it: Optional[int] = None,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> Suggestion:
    """Suggest a learning rate from recorded ``lrs`` and (raw) ``losses`` of a range test.

    Args:
        lrs: learning rates, finite, positive and strictly increasing (non-decreasing for the
            compatibility modes, as their peers accept).
        losses: the loss recorded at each lr (raw for pylrcore's methods; as recorded by the peer,
            i.e. already smoothed, for the compatibility modes). NaN/inf are allowed: they end the curve.
        method: one of :data:`METHODS` or :data:`COMPAT_METHODS`.
        beta: EMA weight for pylrcore's smoothing; None picks a window of ~5% of the curve.
        diverge_factor: the curve is cut where the smoothed loss exceeds this x its running
            minimum (0 disables the cut); :data:`DIVERGE_FACTOR` by default.
        zone: fractions of the total drop that bound the usable range.
        min_points: fewest analysed points for a suggestion (pylrcore's methods).
        skip_start, skip_end: points skipped by the compatibility modes (None: the peer's default).
        num_it: fastai's requested iteration count (None: the number of points).
        lr_diff, thresh, adjust_value: the slide rule's parameters (fastai's defaults; for
            ``"slide"`` read at fastai's default sampling, 12.5 points per decade).

    >>> import numpy as np
    >>> lrs = np.logspace(-5, 0, 100)
    >>> losses = 2 - np.tanh(np.log10(lrs) + 2.5) + np.exp(3 * (np.log10(lrs) + 0.5))
    >>> s = suggest(lrs, losses)
    >>> s.ok and s.zone[0] < s.lr < s.zone[1]
    True
    """
    if method not in _METHOD_CODES:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS + COMPAT_METHODS))}; got {method!r}")
    # The core checks the lrs (finite, > 0, increasing; the compatibility modes take an lr recorded
    # twice, as their peers do) in the same pass that reads them, and the lengths and option ranges.
    lr_arr = as_curve(lrs, "lrs")
    loss_arr = as_curve(losses, "losses")
    beta_value = -1.0 if beta is None else check_beta(beta)
    try:
        zone_lo, zone_hi = (float(z) for z in zone)
    except (TypeError, ValueError):
        raise TypeError(f"zone must be a pair of fractions (lo, hi), got {zone!r}") from None
    diverge = check_real(diverge_factor, "diverge_factor")
    if diverge != 0 and diverge <= 1:
        raise ValueError(f"diverge_factor must be > 1 (or 0 to disable the divergence cut), got {diverge_factor!r}")
    thresh_value = check_real(thresh, "thresh")
    adjust = check_real(adjust_value, "adjust_value")
    if adjust <= 0:
        raise ValueError(f"adjust_value must be > 0 (the slide rule's lr multiplier, fastai's 1.0), got {adjust_value!r}")
    raw = _core.suggest(lr_arr, loss_arr, {
        "method": _METHOD_CODES[method],
        "beta": beta_value,
        "diverge_factor": diverge,
        "zone_lo": zone_lo,
        "zone_hi": zone_hi,
        "min_points": check_int(min_points, "min_points", minimum=3),
        "slide_lr_diff": check_int(lr_diff, "lr_diff", minimum=1),
        "slide_thresh": thresh_value,
        "slide_adjust": adjust,
        "skip_start": -1 if skip_start is None else check_int(skip_start, "skip_start"),
        "skip_end": -1 if skip_end is None else check_int(skip_end, "skip_end"),
        "num_it": -1 if num_it is None else check_int(num_it, "num_it", minimum=1),
    })
    own = method in METHODS
    ok = raw["status"] == 0
    zone_idx = (int(raw["zone_lo_index"]), int(raw["zone_hi_index"])) if ok and own else None
    return Suggestion(
        lr=float(raw["lr"]) if ok else None,
        method=method,
        zone=(float(lr_arr[zone_idx[0]]), float(lr_arr[zone_idx[1]])) if zone_idx else None,
        reason=str(raw["reason"]),
        status=_STATUS[int(raw["status"])],
        index=_opt_index(raw["index"]) if ok else None,
        zone_indices=zone_idx,
        min_index=_opt_index(raw["min_index"]),
        diverged_at=_opt_index(raw["diverged_index"]),
        first_nonfinite=_opt_index(raw["first_nonfinite_index"]),
        analysed=int(raw["cut_index"]),
        beta=float(raw["beta"]) if own and raw["beta"] > 0 else None,
        noise=_opt_float(raw["noise"]) if own else None,
        drop=_opt_float(raw["drop"]) if own else None,
        confidence=("low" if raw["low_confidence"] else "high") if ok else None,
        lrs=lr_arr,
        losses=loss_arr,
        smoothed=raw["smoothed"] if own else None,
        slope=raw["slope"] if own else None,
    )


def gradient(y: Any, x: Any = None, *, edge_order: int = 1) -> FloatArray:
    """Derivative of samples ``y`` (at coordinates ``x``, unit spacing if None), equal to
    ``numpy.gradient(y, x, edge_order=edge_order)`` bit for bit on 1-D float64 input.

    >>> gradient([1.0, 4.0, 9.0, 16.0]).tolist()
    [3.0, 4.0, 6.0, 7.0]
    """
    y_arr = as_curve(y, "y")
    order = check_int(edge_order, "edge_order", minimum=1)
    if order > 2:
        raise ValueError(f"edge_order must be 1 or 2, got {edge_order!r}")
    if y_arr.size < order + 1:
        raise ValueError(f"y needs at least edge_order + 1 = {order + 1} points, got {y_arr.size}")
    if x is None:
        return _core.gradient(y_arr, None, order)
    x_arr = as_curve(x, "x")
    same_length(x_arr, "x", y_arr, "y")
    if not np.isfinite(x_arr).all():
        raise ValueError("x must be finite")
    steps = np.diff(x_arr)
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError("x must be strictly monotonic (no repeated coordinates)")
    return _core.gradient(y_arr, x_arr, order)


@dataclass(frozen=True)
class SweepStop:
    """Why a range test stopped early, as values: ``kind`` ``"diverged"`` (the smoothed loss passed
    ``threshold`` = the divergence predicate's bound for ``best`` and ``factor``) or ``"nonfinite"``
    (the raw loss ``value`` was NaN/inf), at ``step`` and ``lr``. ``str()`` is ``stop_reason``."""

    kind: str
    step: int
    lr: float
    value: float
    best: float
    factor: float
    threshold: float

    @property
    def short(self) -> str:
        """Two or three words for a plot label or a verdict."""
        return "loss diverged" if self.kind == "diverged" else f"non-finite loss ({self.value})"

    def __str__(self) -> str:
        if self.kind == "nonfinite":
            return f"non-finite loss ({self.value}) at lr {self.lr:.3g}"
        return (f"loss diverged (smoothed {self.value:.3g} > {self.factor:g} x best {self.best:.3g}) "
                f"at lr {self.lr:.3g}")
