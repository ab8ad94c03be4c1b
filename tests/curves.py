"""Synthetic range-test curves shared by the tests (valley, noisy, diverging, NaN)."""

from __future__ import annotations

import numpy as np


def lr_ladder(n: int = 100, start: float = 1e-6, end: float = 10.0) -> np.ndarray:
    """torch-lr-finder's exponential ladder: start*(end/start)**(i/(n-1))."""
    return start * (end / start) ** (np.arange(n) / max(n - 1, 1))


def valley(lrs: np.ndarray, center: float = 1e-3, width: float = 0.5, rise_at: float = 0.1) -> np.ndarray:
    """A loss that is flat, falls as a logistic in log10(lr) centred on `center` (steepest there),
    then rises quadratically past `rise_at`."""
    x = np.log10(lrs)
    fall = 2.3 - 1.8 / (1 + np.exp(-(x - np.log10(center)) / width))
    rise = np.where(x > np.log10(rise_at), 8 * (x - np.log10(rise_at)) ** 2, 0.0)
    return fall + rise


def noisy_valley(lrs: np.ndarray, seed: int, noise: float = 0.05, **kw: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return valley(lrs, **kw) + rng.normal(0.0, noise, lrs.size)


def torch_lr_finder_history(raw: np.ndarray, smooth_f: float = 0.05) -> np.ndarray:
    """What torch-lr-finder records (its smoothed loss), written out as its loop does it."""
    out = []
    for i, loss in enumerate(raw):
        if i > 0:
            loss = smooth_f * loss + (1 - smooth_f) * out[-1]
        out.append(float(loss))
    return np.array(out)
