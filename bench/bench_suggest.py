"""Suggestion ("steepest", with smoothing, divergence cut and usable range) on a 10^5-point curve:
pylrcore vs the same rule written with numpy/scipy (tests/numpy_reference.py)."""

from __future__ import annotations

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


# The compat modes against the peers' own code on the same recorded curve (what a finder library
# that uses pylrcore as its backend replaces).
def recorded(n: int, seed: int, kind: str) -> tuple:
    """(lrs, losses) of n points as the peer records them: its EMA already applied."""
    lrs = lr_ladder(n)
    return lrs, pylrcore.ema(noisy_valley(lrs, seed=seed, noise=0.1), 0.98, kind=kind)


N_PEER = size(100_000, 2_000)
PEER_LRS, PEER_HIST = recorded(N_PEER, 1, "lightning")
N_VALLEY = size(2_000, 300)  # fastai's valley is O(n^2) in Python
VALLEY_LRS, VALLEY_HIST = recorded(N_VALLEY, 2, "fastai")


@pytest.mark.benchmark(group="lightning-suggestion-1e5")
def test_lightning_compat_pylrcore(benchmark) -> None:
    assert benchmark(pylrcore.suggest, PEER_LRS, PEER_HIST, "lightning").ok


@pytest.mark.benchmark(group="lightning-suggestion-1e5")
def test_lightning_suggestion_peer(benchmark) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr_finder = pytest.importorskip("pytorch_lightning.tuner.lr_finder")
    finder = lr_finder._LRFinder(mode="exponential", lr_min=PEER_LRS[0], lr_max=PEER_LRS[-1], num_training=N_PEER)
    finder.results = {"lr": PEER_LRS.tolist(), "loss": PEER_HIST.tolist()}
    lr = benchmark(finder.suggestion)
    assert lr == pylrcore.suggest(PEER_LRS, PEER_HIST, "lightning").lr


@pytest.mark.benchmark(group="fastai-valley-2e3")
def test_fastai_valley_compat_pylrcore(benchmark) -> None:
    assert benchmark(pylrcore.suggest, VALLEY_LRS, VALLEY_HIST, "fastai_valley").ok


@pytest.mark.benchmark(group="fastai-valley-2e3")
def test_fastai_valley_rederived_peer(benchmark) -> None:
    pytest.importorskip("torch")
    from test_suggestion import ref_fastai

    lr = benchmark.pedantic(ref_fastai, args=("valley", VALLEY_LRS, VALLEY_HIST), rounds=3, iterations=1)
    assert lr == pylrcore.suggest(VALLEY_LRS, VALLEY_HIST, "fastai_valley").lr
