"""EMA over 10^7 float64 losses: pylrcore vs scipy.signal.lfilter (+ the bias correction) vs a loop."""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import size
from scipy.signal import lfilter

import pylrcore

N = size(10_000_000, 20_000)
BETA = 0.98
X = np.random.default_rng(0).normal(2.0, 0.3, N)
REFERENCE = lfilter([1 - BETA], [1, -BETA], X) / (1 - BETA ** np.arange(1, N + 1))


def python_loop(x: np.ndarray) -> list:
    out, avg, power = [], 0.0, 1.0
    for v in x.tolist():
        avg = BETA * avg + (1 - BETA) * v
        power *= BETA
        out.append(avg / (1 - power))
    return out


@pytest.mark.benchmark(group="ema-1e7")
def test_ema_pylrcore(benchmark) -> None:
    out = benchmark(pylrcore.ema, X, BETA)
    np.testing.assert_allclose(out, REFERENCE, rtol=1e-12)


@pytest.mark.benchmark(group="ema-1e7")
def test_ema_scipy_lfilter(benchmark) -> None:
    def run() -> np.ndarray:
        return lfilter([1 - BETA], [1, -BETA], X) / (1 - BETA ** np.arange(1, N + 1))

    np.testing.assert_allclose(benchmark(run), REFERENCE, rtol=1e-12)


@pytest.mark.benchmark(group="ema-1e7")
def test_ema_python_loop(benchmark) -> None:
    out = benchmark.pedantic(python_loop, args=(X,), rounds=3, iterations=1)
    np.testing.assert_allclose(out, REFERENCE, rtol=1e-12)
