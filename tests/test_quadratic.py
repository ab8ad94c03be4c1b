"""The seed's three learners on f(x) = x², checked against the closed form x_k = 5 (1 - 2 lr)^k."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, List, Optional

import numpy as np
import pytest

from pylrcore.diagnosis import Symptom
from pylrcore.quadratic import LEARNING_RATES, compare, format_table, run


def closed_form(lr: float, x0: float = 5.0, steps: int = 50) -> List[Fraction]:
    """x_k = x0 (1 - 2 lr)^k in exact rational arithmetic (lr taken as the exact float it is)."""
    r = 1 - 2 * Fraction(lr)
    return [Fraction(x0) * r**k for k in range(steps + 1)]


def first_step(xs: List[Fraction], pred: Callable[[Fraction], bool]) -> Optional[int]:
    return next((k for k in range(1, len(xs)) if pred(xs[k])), None)


@pytest.mark.parametrize("lr", LEARNING_RATES)
def test_trajectory_matches_the_closed_form(lr: float) -> None:
    r = run(lr)
    exact = closed_form(lr)
    assert r.x.shape == r.f.shape == (51,) and r.x[0] == 5.0 and r.f[0] == 25.0
    # Each float step x - lr * 2x rounds once or twice: 50 steps stay within ~1e-13 relative.
    for k, e in enumerate(exact):
        assert abs(Fraction(float(r.x[k])) - e) <= abs(e) * Fraction(1, 10**13), k
        assert r.f[k] == r.x[k] * r.x[k]
    np.testing.assert_allclose(r.x, 5.0 * (1 - 2 * lr) ** np.arange(51), rtol=1e-13)
    assert r.rate == abs(1 - 2 * lr)


def test_the_three_verdicts_and_final_numbers() -> None:
    slow, good, big = compare()
    assert [r.verdict for r in (slow, good, big)] == ["too slow", "converges", "diverges"]
    # x_50 = 5 * 0.998^50 = 4.5237..., 5 * 0.8^50 = 7.136e-5, 5 * (-1.2)^50 = 45502.19...
    assert slow.x[-1] == pytest.approx(4.523734090020178, rel=1e-13)
    assert good.x[-1] == pytest.approx(7.136238463529802e-05, rel=1e-13)
    assert big.x[-1] == pytest.approx(5 * 1.2**50, rel=1e-13)
    assert good.final_loss <= 1e-6 * 25 < slow.final_loss


def test_explode_steps_agree_with_the_closed_form() -> None:
    exact = closed_form(1.1)
    big = run(1.1)
    # f(x_k) > f(x0): |1 - 2.2| = 1.2 > 1, so already at step 1 (x_1 = -6, f = 36 > 25).
    assert big.explode_step == first_step(exact, lambda x: x * x > 25) == 1
    assert big.x[1] == pytest.approx(-6.0)
    # The seed's rule |x| > 1000: 5 * 1.2^29 = 989.5, 5 * 1.2^30 = 1187.4 -> step 30 (it prints 23).
    assert big.blowup_step == first_step(exact, lambda x: abs(x) > 1000) == 30
    assert math.ceil(math.log(200) / math.log(1.2)) == 30
    for lr in (0.001, 0.1):
        r = run(lr)
        assert r.explode_step is None and r.blowup_step is None


def test_stability_boundary_is_lr_below_one() -> None:
    assert run(0.999, steps=20000).verdict == "converges"
    assert run(0.5).x[1] == 0.0  # one step to the minimum
    one = run(1.0)
    assert one.verdict == "oscillates" and set(np.abs(one.x)) == {5.0} and one.explode_step is None
    assert run(1.001).verdict == "diverges"
    huge = run(1e3, steps=200)  # overflows to inf: kept, no warning, still diverges
    assert huge.verdict == "diverges" and not np.isfinite(huge.f[-1]) and huge.explode_step == 1


def test_pylrcore_diagnoses_each_history() -> None:
    slow, good, big = compare()
    assert slow.diagnosis.code is Symptom.SLOW and "too small" in slow.diagnosis.message
    assert good.diagnosis.code is Symptom.HEALTHY
    assert big.diagnosis.code is Symptom.EXPLODING and "too high" in big.diagnosis.message


def test_table_has_the_three_rows() -> None:
    text = format_table(compare())
    assert "0.001" in text and "too slow" in text and "converges" in text and "diverges" in text
    assert "f(x_k) > f(x0)" in text and "exploding:" in text


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(lr=-1.0), dict(lr=float("nan")), dict(lr=True),
                                    dict(lr=0.1, steps=5), dict(lr=0.1, x0=float("inf"))])
def test_bad_arguments(kwargs: "dict[str, float]") -> None:
    with pytest.raises(ValueError):
        run(**kwargs)  # type: ignore[arg-type]
