"""pylrcore's "steepest" rule written independently with numpy/scipy: the reference the tests and the
benchmark compare the compiled core with (same curve, same index)."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def debiased_ema(x: np.ndarray, beta: float) -> np.ndarray:
    return lfilter([1 - beta], [1, -beta], x) / (1 - beta ** np.arange(1, x.size + 1))


def steepest_numpy(lrs: np.ndarray, raw: np.ndarray, diverge_factor: float = 4.0, zone=(0.1, 0.9)) -> int:
    bad = ~np.isfinite(raw)
    cut = int(np.argmax(bad)) if bad.any() else raw.size
    beta = 1 - 2 / (max(3.0, 0.05 * cut) + 1)
    causal = debiased_ema(raw[:cut], beta)
    best_before = np.minimum.accumulate(causal)[:-1]
    over = causal[1:] > best_before + (diverge_factor - 1) * np.abs(best_before)
    if over.any():
        cut = 1 + int(np.argmax(over))
    smooth = debiased_ema(causal[:cut][::-1], beta)[::-1]
    slope = np.gradient(smooth, np.log(lrs[:cut]))
    m = int(np.argmin(smooth))
    peak = m - int(np.argmax(smooth[: m + 1][::-1]))
    top = smooth[peak]
    drop = top - smooth[m]
    lo = peak + int(np.argmax(smooth[peak : m + 1] <= top - zone[0] * drop))
    hi = lo + int(np.argmax(smooth[lo : m + 1] <= top - zone[1] * drop))
    return lo + int(np.argmin(slope[lo : hi + 1]))
