"""Diagnosis of a training-loss history: which row of the symptom table it shows, and what to do.

=============================  ============================  ===================
symptom (``code``)             likely cause                  LR factor (lo, hi)
=============================  ============================  ===================
``exploding`` (incl. NaN)      LR way too large              (0.01, 0.01)
``oscillating``                LR too large                  (0.1, 0.1)
``unstable`` (spikes, rising)  LR too large                  (0.2, 0.5), or Adam
``not_decreasing``             LR too small                  (10, 10)
``slow``                       LR too small                  (3, 10)
``plateau`` (after progress)   LR was good, now too large    (0.1, 0.5): a decay
``healthy``                    --                            (1, 1)
=============================  ============================  ===================

When several hold, they are listed in that order in ``findings`` and the first is the diagnosis:
signs of a too-large LR come first, because raising an LR that is already unstable is the one
suggestion that can make things much worse. Later findings can be consequences of the first
(a run that explodes also stops decreasing).

>>> import numpy as np
>>> d = diagnose(np.full(200, 2.3) + 0.001 * np.sin(np.arange(200)), lr=1e-5)
>>> d.code.value, d.factor
('not_decreasing', (10.0, 10.0))
>>> d.message
'loss is not decreasing (0.0% over 200 steps): LR 1e-5 is likely too small: try 1e-4'
"""

from __future__ import annotations

import math

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ._checks import as_curve, as_settings, check_positive
from ._native import _core

__all__ = ["diagnose", "Diagnosis", "Finding", "Symptom", "DEFAULTS"]


class Symptom(str, enum.Enum):
    """Diagnosis codes, in priority order (the core's order)."""

    EXPLODING = "exploding"
    OSCILLATING = "oscillating"
    UNSTABLE = "unstable"
    NOT_DECREASING = "not_decreasing"
    SLOW = "slow"
    PLATEAU = "plateau"
    HEALTHY = "healthy"

    def __str__(self) -> str:
        return self.value


# The core's codes (its Symptom table) -> these; the names agree, checked here.
_BY_CORE_CODE = {int(c): Symptom(c.name) for c in _core.Symptom}

#: Default thresholds: the detector's (see :data:`pylrcore.detect.DEFAULTS`) plus the diagnosis's own.
DEFAULTS: Dict[str, float] = dict(_core.diagnose_defaults())


def _format_lr(lr: float) -> str:
    """3e-3 style: short, and the same form users type."""
    if not math.isfinite(lr):  # lr * factor can overflow for a huge --lr
        return repr(lr)
    mantissa, exponent = f"{lr:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class Finding:
    """One symptom: ``code``, the ``step`` where it starts (None for healthy), the LR ``factor``
    range (lo, hi) to apply, and a one-line ``message``."""

    code: Symptom
    step: Optional[int]
    factor: Tuple[float, float]
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Diagnosis:
    """The diagnosis (the first finding) with the numbers behind it.

    ``evidence`` holds counts (points, finite, nonfinite, spikes), steps (first_nonfinite,
    explosion_step, first_spike, oscillation_step, plateau_step, best_step, rise_step; None when it
    did not happen), levels (first: mean of the first few losses; middle, end: means of the central
    and last ``chunk`` of them; best: lowest smoothed loss; noise: per-step sd) and ratios:
    relative_drop ((first - end) / |first|) with its standard error drop_se, late_share (share of
    the drop made in the second half: ~0.5 for a straight line; None without a drop), progress ((first - best) / |first|),
    rise (end above the lowest level reached, relative; "rising" needs it above ``rising`` of that
    level and of the progress made), alternation (sign-change rate of the
    differences; i.i.d. noise gives 2/3), amplitude (median |difference| / median |loss|),
    oscillation_fraction, tail_change and tail_change_se (relative change over the last
    ``plateau_tail`` of the history).
    """

    code: Symptom
    step: Optional[int]
    evidence: Dict[str, Any]
    factor: Tuple[float, float]
    message: str
    findings: List[Finding] = field(default_factory=list)

    def suggest_lr(self, lr: float) -> Tuple[float, float]:
        """The suggested LR range for a run trained at ``lr``."""
        lr = check_positive(lr, "lr")
        return (lr * self.factor[0], lr * self.factor[1])

    def __str__(self) -> str:
        lines = [f"{self.code.value}: {self.message}"]
        lines += [f"  also {f.code.value}: {f.message}" for f in self.findings[1:]]
        return "\n".join(lines)


def _percent(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _advice(factor: Tuple[float, float], lr: Optional[float], too: str) -> str:
    lo, hi = factor
    if lr is None:
        if lo >= 1:
            amount = f"{lo:g}x" if lo == hi else f"{lo:g}-{hi:g}x"
            return f"LR is likely too {too}: increase it {amount}"
        amount = f"{1 / lo:g}x" if lo == hi else f"{1 / hi:g}-{1 / lo:g}x"
        return f"LR is likely too {too}: decrease it {amount}"
    if not (math.isfinite(lr * lo) and math.isfinite(lr * hi)):
        # An lr near the float range's end: a multiple of it is not a number anyone can try.
        amount = f"{lo:g}x" if lo >= 1 else f"{1 / lo:g}x"
        return f"LR {_format_lr(lr)} is likely too {too}, and {amount} of it overflows: check the lr you passed"
    target = _format_lr(lr * lo) if lo == hi else f"{_format_lr(lr * lo)} to {_format_lr(lr * hi)}"
    return f"LR {_format_lr(lr)} is likely too {too}: try {target}"


def _message(code: Symptom, step: Optional[int], factor: Tuple[float, float], ev: Dict[str, Any],
             lr: Optional[float], explode_factor: float) -> str:
    n = ev["points"]
    if code is Symptom.EXPLODING:
        nonfinite, exploded = ev["first_nonfinite"], ev["explosion_step"]
        if nonfinite is not None and (exploded is None or nonfinite <= exploded):
            what = f"loss became non-finite at step {nonfinite}"
        else:
            what = f"loss exploded at step {exploded} (its level rose over {explode_factor:g}x and stayed up)"
        return f"{what}: {_advice(factor, lr, 'high')}"
    if code is Symptom.OSCILLATING:
        return (f"loss oscillates from step {step} (differences alternate {_percent(ev['alternation'])} "
                f"of the time): {_advice(factor, lr, 'high')}")
    if code is Symptom.UNSTABLE:
        if ev["spikes"] and step == ev["first_spike"]:
            what = f"{ev['spikes']} loss spikes from step {step}"
        elif ev["start_ratio"] >= DEFAULTS["worse_than_start"] and ev["rise"] <= DEFAULTS["rising"]:
            what = f"loss stays {ev['start_ratio']:.2g}x above its starting value from step {step}"
        else:
            what = f"loss rose {_percent(ev['rise'])} after step {step}"
        return f"{what}: {_advice(factor, lr, 'high')} (or use Adam)"
    if code is Symptom.NOT_DECREASING:
        drop = _percent(ev["relative_drop"])
        return f"loss is not decreasing ({drop} over {n} steps): {_advice(factor, lr, 'small')}"
    if code is Symptom.SLOW:
        return (f"loss decreases slowly and steadily ({_percent(ev['relative_drop'])} over {n} steps, "
                f"{_percent(ev['late_share'])} of it in the second half): {_advice(factor, lr, 'small')}")
    if code is Symptom.PLATEAU:
        lo, hi = factor
        if lr is None:
            the_lr, decay = "the LR", f"decay it {1 / hi:g}-{1 / lo:g}x"
        else:
            the_lr, decay = f"the LR {_format_lr(lr)}", f"decay it to {_format_lr(lr * lo)}-{_format_lr(lr * hi)}"
        return (f"loss plateaued from step {step} after a {_percent(ev['progress'])} drop: "
                f"{the_lr} was good but is now too large: {decay} (a schedule)")
    keep = "keep the LR" if lr is None else f"keep LR {_format_lr(lr)}"
    return f"loss fell {_percent(ev['relative_drop'])} over {n} steps, steadily: {keep} (a decay schedule may help later)"


def diagnose(losses: Any, *, lr: Optional[float] = None, **thresholds: Any) -> Diagnosis:
    """Diagnose a training-loss history (one loss per step; NaN/Inf allowed) against the symptom table.

    ``lr`` (optional) is the LR the history was trained with: messages then name the LR to try.
    ``thresholds`` override :data:`DEFAULTS` by name (detector settings included, e.g. ``window``).
    At least 10 losses are needed.

    >>> import numpy as np
    >>> steps = np.arange(2000)
    >>> d = diagnose(0.1 + 2.0 * np.exp(-steps / 100.0), lr=0.1)
    >>> d.code.value, d.step is not None
    ('plateau', True)
    """
    x = as_curve(losses, "losses", min_size=10)
    if lr is not None:
        lr = check_positive(lr, "lr")
    config = as_settings(thresholds, DEFAULTS, "diagnose()")
    raw_evidence, raw_findings = _core.diagnose(x, config)
    # Steps of things that did not happen (-1) and undefined ratios (NaN) become None.
    evidence = {
        k: None if (k.endswith(("_step", "_nonfinite", "_spike")) and v < 0) or v != v else v
        for k, v in raw_evidence.items()
    }
    findings = []
    explode_factor = config.get("explode_factor", DEFAULTS["explode_factor"])
    for code_number, raw_step, lo, hi in raw_findings:
        code = _BY_CORE_CODE[code_number]
        step = None if raw_step < 0 else int(raw_step)
        factor = (float(lo), float(hi))
        findings.append(Finding(code, step, factor, _message(code, step, factor, evidence, lr, explode_factor)))
    first = findings[0]
    return Diagnosis(first.code, first.step, evidence, first.factor, first.message, findings)
