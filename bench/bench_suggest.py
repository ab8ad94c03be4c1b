"""Suggestion ("steepest", with smoothing, divergence cut and usable range) on a 10^5-point curve:
pylrcore vs the same rule written with numpy/scipy (tests/numpy_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import size
from curves import lr_ladder, noisy_valley
from numpy_reference import steepest_numpy

import pylrcore

N = size(100_000, 2_000)
LRS = lr_ladder(N)
RAW = noisy_valley(LRS, seed=0, noise=0.1)
EXPECTED = steepest_numpy(LRS, RAW)


@pytest.mark.benchmark(group="suggest-1e5")
def test_suggest_pylrcore(benchmark) -> None:
    s = benchmark(pylrcore.suggest, LRS, RAW)
    assert s.index == EXPECTED


@pytest.mark.benchmark(group="suggest-1e5")
def test_suggest_numpy(benchmark) -> None:
    assert benchmark(steepest_numpy, LRS, RAW) == EXPECTED


@pytest.mark.benchmark(group="suggest-compat-1e5")
@pytest.mark.parametrize("method", ["torch_lr_finder", "lightning", "fastai_valley", "fastai_steep"])
def test_suggest_compat_modes(benchmark, method: str) -> None:
    s = benchmark(pylrcore.suggest, LRS, RAW, method)
    assert s.ok
