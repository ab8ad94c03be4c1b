"""The three learners on f(x) = x²: gradient descent from x0 = 5 with a too-small, a good and a too-large lr.

Gradient descent on f(x) = x² (gradient 2x) is ``x_{k+1} = x_k - lr * 2 x_k = (1 - 2 lr) x_k``, so
``x_k = x0 (1 - 2 lr)^k`` and ``f(x_k) = x0² (1 - 2 lr)^(2k)``. With ``r = |1 - 2 lr|``:

* ``r < 1`` (0 < lr < 1) it converges; lr = 0.5 reaches the minimum in one step. The stability
  boundary of f = x² is lr < 1 (in general lr < 2 / L for curvature L; here L = 2).
* ``r = 1`` (lr = 1) it bounces between x0 and -x0 forever (verdict ``oscillates``).
* ``r > 1`` (lr > 1) it diverges: |x_k| grows by r every step.

Verdicts of :func:`run` (stated on the numbers it computed, not only on r):

* ``diverges``   r > 1;
* ``oscillates`` r = 1;
* ``converges``  r < 1 and f(x_N) <= ``tol`` * f(x0) after the N steps (tol = 1e-6 by default);
* ``too slow``   r < 1 but f(x_N) is still above ``tol`` * f(x0) after N steps.

Where it explodes, two definitions, both computed from the trajectory:

* ``explode_step``: the first step k >= 1 where f(x_k) > f(x0), i.e. the loss is above where it
  started. For r > 1 that is step 1 (f(x_1) = r² f(x0)); it never happens for r <= 1.
* ``blowup_step``: the first step k >= 1 where |x_k| > ``blowup`` (1000 by default), the rule of
  the seed article's code (``if abs(x) > 1000``). For lr = 1.1 that is step 30 (5 · 1.2^30 ≈ 1187,
  5 · 1.2^29 ≈ 989); the article prints "epoch 23", which its own code does not produce.

Each loss history f(x_0), ..., f(x_N) also goes through :func:`pylrcore.diagnose` with the lr.

>>> [(r.lr, r.verdict, r.explode_step, r.blowup_step) for r in compare()]
[(0.001, 'too slow', None, None), (0.1, 'converges', None, None), (1.1, 'diverges', 1, 30)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ._checks import FloatArray
from .diagnosis import Diagnosis, diagnose

__all__ = ["QuadraticRun", "run", "compare", "format_table", "LEARNING_RATES"]

#: The seed article's three learning rates: too small, just right, too large.
LEARNING_RATES = (0.001, 0.1, 1.1)


@dataclass(frozen=True)
class QuadraticRun:
    """Gradient descent on f(x) = x² at one lr: ``x`` and ``f`` hold steps 0..N (N + 1 values)."""

    lr: float
    x0: float
    steps: int
    x: FloatArray
    f: FloatArray
    rate: float  # r = |1 - 2 lr|, the factor |x| is multiplied by each step
    verdict: str
    explode_step: Optional[int]  # first k >= 1 with f(x_k) > f(x0)
    blowup_step: Optional[int]  # first k >= 1 with |x_k| > blowup (the seed's rule)
    diagnosis: Diagnosis

    @property
    def final_loss(self) -> float:
        return float(self.f[-1])


def _first(mask: "np.ndarray") -> Optional[int]:
    """First index k >= 1 where mask holds (index 0 is the start), or None."""
    hits = np.flatnonzero(mask[1:])
    return int(hits[0]) + 1 if hits.size else None


def run(lr: float, x0: float = 5.0, steps: int = 50, *, tol: float = 1e-6, blowup: float = 1000.0) -> QuadraticRun:
    """Run ``steps`` steps of gradient descent on f(x) = x² from ``x0`` at ``lr`` (see the module doc)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(x0, bool) or not isinstance(x0, (int, float)) or not math.isfinite(x0):
        raise ValueError(f"x0 must be a finite number, got {x0!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 9:
        raise ValueError(f"steps must be an integer >= 9 (diagnose() needs 10 losses), got {steps!r}")
    if not (tol > 0 and blowup > 0):
        raise ValueError(f"tol and blowup must be > 0, got {tol!r} and {blowup!r}")
    lr, x0 = float(lr), float(x0)
    x = np.empty(steps + 1)
    x[0] = x0
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging lr may overflow to inf: kept as is
        for k in range(steps):
            grad = 2.0 * x[k]
            x[k + 1] = x[k] - lr * grad
        f = x * x
    rate = abs(1.0 - 2.0 * lr)
    if rate > 1.0:
        verdict = "diverges"
    elif rate == 1.0:
        verdict = "oscillates"
    elif f[-1] <= tol * f[0]:
        verdict = "converges"
    else:
        verdict = "too slow"
    with np.errstate(invalid="ignore"):
        explode_step = _first(f > f[0])
        blowup_step = _first(np.abs(x) > blowup)
    return QuadraticRun(
        lr=lr, x0=x0, steps=steps, x=x, f=f, rate=rate, verdict=verdict,
        explode_step=explode_step, blowup_step=blowup_step, diagnosis=diagnose(f, lr=lr),
    )


def compare(lrs: Sequence[float] = LEARNING_RATES, x0: float = 5.0, steps: int = 50) -> List[QuadraticRun]:
    """:func:`run` at each lr (by default the seed's 0.001, 0.1 and 1.1)."""
    return [run(lr, x0, steps) for lr in lrs]


def format_table(runs: Sequence[QuadraticRun]) -> str:
    """The short table ``pylrcore demo --quadratic`` prints."""
    if not runs:
        return ""
    r0 = runs[0]
    lines = [
        f"gradient descent on f(x) = x^2 from x0 = {r0.x0:g}, {r0.steps} steps: x_k = x0 (1 - 2 lr)^k,"
        " converges iff |1 - 2 lr| < 1 (0 < lr < 1)",
        f"{'lr':>7}  {'|1-2lr|':>7}  {'f(x_N)':>10}  {'verdict':<10}  {'explode':>7}  {'|x|>1000':>8}  pylrcore diagnosis",
    ]
    for r in runs:
        explode = "-" if r.explode_step is None else str(r.explode_step)
        blow = "-" if r.blowup_step is None else str(r.blowup_step)
        lines.append(
            f"{r.lr:>7g}  {r.rate:>7.3g}  {r.final_loss:>10.4g}  {r.verdict:<10}  {explode:>7}  {blow:>8}  "
            f"{r.diagnosis.code.value}: {r.diagnosis.message}"
        )
    lines.append("explode = first step k with f(x_k) > f(x0); |x|>1000 = first step with |x_k| > 1000 (the seed's rule)")
    return "\n".join(lines)
